"""The trainers: `Trainer` / `Seq2SeqTrainer` whose evaluation ranks the lexicon for every clip.

Keeping whole logit matrices for a test split would cost memory and lose each clip's true
length once batches are padded together; ranking inside `prediction_step`, where each clip's
length is still at hand, keeps only what the metrics need: the top-k lexicon indices and the
greedy ids.
"""

from __future__ import annotations

from pathlib import Path

import torch
from datasets import Dataset
from transformers import Seq2SeqTrainer, Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler

from ..decoding.ctc import CTCRanker, batch_dependent, ctc_log_probs, greedy_ids, output_lengths
from ..decoding.ranking import RANKED_FOR_METRICS, top_candidates
from ..decoding.seq2seq import Seq2SeqRanker, transcribe_and_score
from ..evaluation.metrics import TOP_KS
from ..text.lexicon import DrugName, save_lexicon
from .collator import INPUT_LENGTHS, model_inputs
from .preflight import check_free_space, checkpoint_bytes
from .report import ReportInModelCard

TRAINING_ARGS_PICKLE = "training_args.bin"  # the Trainer's name for its pickled TrainingArguments
TRAINING_ARGS_JSON = "training_args.json"


class LengthsFromColumn:
    """Trainer mixin: `group_by_length` reads the clip lengths from the length column alone.
    Trainer indexes `train_dataset[length_column]` row by row, and a `datasets` 5 column
    formats each row whole, through our on-the-fly transform: every length lookup would read,
    augment and featurise the clip (for Whisper's 27k training clips, minutes before step 1)."""

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        column = self.args.length_column_name
        if self.args.train_sampling_strategy != "group_by_length" or not isinstance(dataset, Dataset) or column not in dataset.column_names:
            return super()._get_train_sampler(train_dataset)
        lengths = dataset.with_format(None).select_columns([column])[column][:]
        return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps, dataset=dataset, lengths=list(lengths))


class LossIsAlreadyAMean:
    """Trainer mixin: the speech models' losses are means already (CTC, cross-entropy), whatever
    the number of label tokens. Their `forward` takes `**kwargs`, from which `Trainer` concludes
    that they normalise by its `num_items_in_batch` themselves: it then multiplies every loss by
    the number of processes (eval_loss and gradients doubled on two processes) and stops dividing
    it by the gradient-accumulation steps. Telling it they do not restores both."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False


class NoPickleInOutputFolder:
    """Trainer mixin: the output folder (what `save_model` writes and `push_to_hub` uploads)
    holds `training_args.json`, never the Trainer's pickled `training_args.bin`. Checkpoint
    folders keep the Trainer's own resume files."""

    def _save(self, output_dir: str | None = None, state_dict=None):
        super()._save(output_dir, state_dict)
        folder = Path(output_dir if output_dir is not None else self.args.output_dir)
        if self.args.should_save and folder.resolve() == Path(self.args.output_dir).resolve():
            (folder / TRAINING_ARGS_PICKLE).unlink(missing_ok=True)
            (folder / TRAINING_ARGS_JSON).write_text(self.args.to_json_string(), encoding="utf-8")

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        # pushing during training copies a checkpoint's pickled training_args.bin into the
        # upload: s2t-hf pushes once, at the end of the run (push_to_hub), from a clean folder
        return None


class Seq2SeqRankingTrainer(LossIsAlreadyAMean, LengthsFromColumn, NoPickleInOutputFolder, ReportInModelCard, Seq2SeqTrainer):
    """`Seq2SeqTrainer` whose evaluation returns (top-k lexicon indices, generated ids)."""

    def __init__(self, *args, ranker: Seq2SeqRanker, max_new_tokens: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.ranker = ranker
        self.max_new_tokens = max_new_tokens

    def compute_loss(self, model, inputs, *args, **kwargs):
        return super().compute_loss(model, model_inputs(inputs), *args, **kwargs)

    # Seq2SeqTrainer.evaluate/predict only gather generation kwargs (prediction_step below uses
    # max_new_tokens) and switch the gathering to `accelerator.gather`, which keeps the clips the
    # distributed sampler repeats to even out the last batch: with two processes a test split of 5
    # clips was scored as 8. Trainer's own evaluate/predict gather with `gather_for_metrics`.
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        self._gen_kwargs = {}
        return Trainer.evaluate(self, eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test"):
        self._gen_kwargs = {}
        return Trainer.predict(self, test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        inputs = model_inputs(self._prepare_inputs(inputs))
        labels = inputs.get("labels")
        unwrapped = self.accelerator.unwrap_model(model)
        features, mask = inputs["input_features"], inputs.get("attention_mask")
        with torch.no_grad():  # one encoder pass serves the loss, the transcript and the ranking
            encoder_outputs = unwrapped.get_encoder()(input_features=features, attention_mask=mask)
            loss = self.compute_loss(model, {**inputs, "encoder_outputs": encoder_outputs}).detach() if labels is not None else None
        if prediction_loss_only:
            return loss, None, None
        generated, scores, _ = transcribe_and_score(
            unwrapped, self.ranker, features, mask, self.max_new_tokens, max(TOP_KS), encoder_outputs=encoder_outputs
        )
        return loss, (top_candidates(scores, RANKED_FOR_METRICS).indices.to(features.device), generated), labels


class CTCTrainer(LossIsAlreadyAMean, LengthsFromColumn, NoPickleInOutputFolder, ReportInModelCard, Trainer):
    def __init__(self, *args, ranker: CTCRanker, **kwargs):
        super().__init__(*args, **kwargs)
        self.ranker = ranker

    def compute_loss(self, model, inputs, *args, **kwargs):
        return super().compute_loss(model, model_inputs(inputs), *args, **kwargs)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        loss, logits, labels = super().prediction_step(model, model_inputs(inputs), prediction_loss_only, ignore_keys)
        if prediction_loss_only or logits is None:
            return loss, logits, labels
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        unwrapped = self.accelerator.unwrap_model(model)
        if batch_dependent(model_inputs(inputs)):  # e.g. wav2vec2-base: score each clip as S2T does, alone
            audio = {key: inputs[key] for key in ("input_values", "input_features") if key in inputs}
            log_probs = ctc_log_probs(unwrapped, audio, inputs[INPUT_LENGTHS])
        else:
            log_probs = logits.float().log_softmax(-1).cpu()
        lengths = output_lengths(unwrapped, inputs[INPUT_LENGTHS], log_probs.shape[1])
        ranking = self.ranker.rank(log_probs, lengths, top_k=RANKED_FOR_METRICS)
        device = logits.device
        return loss, (ranking.indices.to(device), greedy_ids(log_probs, lengths).to(device)), labels


def train_and_save(trainer: Trainer, processor, lexicon: list[DrugName], resume_from: str | None = None) -> None:
    """Train (resuming from a checkpoint when given), then save the model, its processor and
    lexicon, the training metrics and the Trainer state into the output folder.

    The output folder holds no pickle: weights are safetensors and the Trainer's
    `training_args.bin` (a pickled object) is replaced by `training_args.json` (see
    `NoPickleInOutputFolder`). Checkpoints keep the Trainer's own optimizer/scheduler/RNG
    files, which resuming needs."""
    output_dir = Path(trainer.args.output_dir)  # start_run proved it writable
    check_free_space(output_dir, checkpoint_bytes(trainer.model.num_parameters(), trainer.args.save_total_limit), "output_dir")
    result = trainer.train(resume_from_checkpoint=resume_from)
    if any(parameter.dtype != torch.float32 for parameter in trainer.model.parameters()):
        trainer.model.float()  # frozen weights kept in bfloat16 for training are saved as float32
    trainer.save_model()  # NoPickleInOutputFolder writes training_args.json in place of the pickle
    if trainer.args.should_save:  # one process writes (save_model, save_metrics and save_state check the same)
        processor.save_pretrained(trainer.args.output_dir)
        save_lexicon(lexicon, trainer.args.output_dir)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
