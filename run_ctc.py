#!/usr/bin/env python
"""Fine-tune (or train from scratch) a CTC model to recognise spoken drug names.

    python run_ctc.py recipes/conformer.json
    accelerate launch run_ctc.py recipes/hubert.json

A recipe is one JSON file holding the fields of `ModelArguments`, `DataTrainingArguments`
and `transformers.TrainingArguments`. The steps below follow Hugging Face's
`run_speech_recognition_ctc.py`; the work itself lives in the `s2t_hf` package.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Optional, Union

import torch
from transformers import TrainingArguments

from s2t_hf.decoding.ctc import CTCRanker
from s2t_hf.evaluation.metrics import build_compute_metrics
from s2t_hf.models.deepspeed import fold_weight_norm, without_zero3_init
from s2t_hf.models.freezing import apply_freezing, cast_frozen_parameters
from s2t_hf.models.loading import load_ctc_model
from s2t_hf.training.arguments import DataTrainingArguments, parse_arguments, run_with_clear_errors, start_run
from s2t_hf.training.collator import DataCollatorSpeechWithPadding
from s2t_hf.training.data import drop_unalignable
from s2t_hf.training.distributed import writer_first
from s2t_hf.training.report import evaluate_and_report
from s2t_hf.training.trainers import CTCTrainer, train_and_save

logger = logging.getLogger("run_ctc")


@dataclass
class ModelArguments:
    model_name_or_path: Optional[str] = field(
        default=None,
        metadata={"help": "Hub id or local folder of a pretrained model. Leave unset to train `model_type` from scratch."},
    )
    model_type: str = field(
        default="mel-conformer-ctc",
        metadata={"help": "Architecture to build from scratch when model_name_or_path is unset (any AutoConfig model type with a CTC head)."},
    )
    config_overrides: Optional[Union[dict, str]] = field(
        default=None,
        metadata={"help": "Config fields to set on the model, e.g. {\"hidden_size\": 144, \"num_hidden_layers\": 8}."},
    )
    freeze_feature_encoder: bool = field(
        default=True,
        metadata={"help": "Freeze the convolutional feature encoder of a pretrained model (a model trained from scratch never is)."},
    )
    trainable_layers: Optional[int] = field(
        default=None,
        metadata={"help": "Train only the last N transformer layers (plus the CTC head); the rest is frozen. Unset: train all."},
    )
    train_only_head: bool = field(default=False, metadata={"help": "Train only the CTC head (same as trainable_layers=0)."})
    also_trainable: Optional[list[str]] = field(
        default=None, metadata={"help": "Regular expressions of parameter names to train as well, e.g. 'encoder.layer_norm'."}
    )
    frozen_weights_dtype: Optional[str] = field(
        default=None,
        metadata={"help": "Store frozen weights as 'bfloat16' to halve their memory (needs bf16: true). Saved models are float32."},
    )
    layerdrop: Optional[float] = field(default=None, metadata={"help": "Probability of skipping a transformer layer in training."})
    ctc_loss_reduction: str = field(default="mean", metadata={"help": "How the CTC loss is reduced: 'mean' or 'sum'."})
    ctc_zero_infinity: bool = field(
        default=True, metadata={"help": "Zero infinite CTC losses (a label longer than the clip's frames) instead of failing."}
    )
    cache_dir: Optional[str] = field(default=None, metadata={"help": "Where pretrained models from the Hub are cached."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow a Hub model to run its own code. Off unless you trust it."})


def main() -> None:
    started = time.time()
    # 1. Arguments and logging
    model_args, data_args, training_args = parse_arguments((ModelArguments, DataTrainingArguments, TrainingArguments))
    asked_bf16 = training_args.bf16  # start_run turns it off on a CPU without native bf16
    last_checkpoint = start_run(training_args)

    # 2. Lexicon, synthetic speech and voice-disjoint splits
    lexicon = data_args.read_lexicon()
    with writer_first(training_args, "synthesis") as writer:  # one process synthesises; the others read its splits
        splits = data_args.synthesize_and_split(lexicon, writer)
    if data_args.preprocessing_only:
        logger.info("data ready in %s", data_args.data_dir)
        return

    # 3. Processor and model: from scratch, or a checkpoint (keeping its CTC head when it can spell the lexicon)
    zero3 = getattr(training_args, "hf_deepspeed_config", None) is not None and training_args.hf_deepspeed_config.is_zero3()
    with without_zero3_init() if zero3 else nullcontext():
        loaded = load_ctc_model(
            lexicon,
            model_args.model_name_or_path,
            model_args.model_type,
            config_overrides={
                "ctc_loss_reduction": model_args.ctc_loss_reduction,
                "ctc_zero_infinity": model_args.ctc_zero_infinity,
                **({"layerdrop": model_args.layerdrop} if model_args.layerdrop is not None else {}),
                **(model_args.config_overrides or {}),
            },
            **({"cache_dir": model_args.cache_dir, "trust_remote_code": model_args.trust_remote_code} if model_args.model_name_or_path else {}),
        )
    model, processor = loaded.model, loaded.processor
    if model_args.model_name_or_path and model_args.freeze_feature_encoder and hasattr(model, "freeze_feature_encoder"):
        model.freeze_feature_encoder()
    if zero3:
        fold_weight_norm(model)  # the known ZeRO-3 trap of wav2vec 2.0 / HuBERT's positional convolution
    apply_freezing(model, model_args.trainable_layers, model_args.train_only_head, model_args.also_trainable)
    if model_args.frozen_weights_dtype:
        if model_args.frozen_weights_dtype != "bfloat16":
            raise ValueError(f"frozen_weights_dtype={model_args.frozen_weights_dtype!r}: only 'bfloat16' is supported")
        if training_args.bf16:
            cast_frozen_parameters(model, torch.bfloat16)
        elif asked_bf16:  # the recipe's bf16 was turned off on this CPU: so are its bfloat16 frozen weights
            logger.warning("frozen_weights_dtype: bfloat16 frozen weights need bf16 compute, which this CPU lacks: they stay float32 "
                           "(about twice their memory)")
        else:
            raise ValueError("frozen_weights_dtype='bfloat16' needs \"bf16\": true (bf16 autocast computes with the bfloat16 weights)")

    # 4. Model-ready datasets: token labels, audio read (and augmented) on the fly
    train_dataset, eval_dataset, test_dataset = data_args.model_ready_splits(splits, processor, training_args.seed)
    train_dataset = drop_unalignable(train_dataset, model._get_feat_extract_output_lengths, "train")

    # 5. Trainer, ranking every lexicon name by CTC likelihood at evaluation
    ranker = CTCRanker.for_tokenizer(lexicon, processor.tokenizer)
    training_args.remove_unused_columns = False  # the on-the-fly audio transform needs its `audio` column
    trainer = CTCTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=DataCollatorSpeechWithPadding(processor),
        processing_class=processor,
        compute_metrics=build_compute_metrics(lexicon, processor.tokenizer),
        ranker=ranker,
    )

    # 6. Train
    train_and_save(trainer, processor, lexicon, resume_from=last_checkpoint)

    # 7. Evaluate on validation and on the unseen-voice test split; calibrate on validation; report, model card, Hub
    evaluate_and_report(
        trainer, test_dataset, splits, processor, lexicon,
        model_description=f"{model_args.model_name_or_path or model_args.model_type + ' (from scratch)'}, {model.num_parameters() / 1e6:.1f}M parameters",
        finetuned_from=model_args.model_name_or_path, started=started, tags=["ctc"], max_calibration_samples=data_args.max_eval_samples,
        calibration_conditions=data_args.calibration_conditions,
    )


if __name__ == "__main__":
    sys.exit(run_with_clear_errors(main, "run_ctc.py"))
