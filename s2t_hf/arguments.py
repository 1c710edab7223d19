"""Recipes: the arguments of one run, in one JSON file, and the data arguments every entry point shares."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from datasets import DatasetDict
from transformers import HfArgumentParser, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from .data import build_corpus
from .lexicon import DEFAULT_LEXICON, DrugName


class RecipeError(ValueError):
    """A recipe file that cannot be read."""


def read_recipe(path: str | Path) -> dict[str, Any]:
    """Load a recipe, dropping documentation keys (any key starting with '_', such as '_comment')."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {str(path)!r} does not exist; see recipes/ for examples")
    try:
        recipe = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RecipeError(f"recipe {str(path)!r} is not valid JSON: {error}") from None
    if not isinstance(recipe, dict):
        raise RecipeError(f"recipe {str(path)!r} must hold one JSON object of argument names and values")
    return {key: value for key, value in recipe.items() if not key.startswith("_")}


@dataclass
class DataTrainingArguments:
    lexicon: str = field(
        default=DEFAULT_LEXICON,
        metadata={"help": "Built-in lexicon ('common', 'generic', 'brand') or a file with one drug name per line."},
    )
    max_lexicon_names: Optional[int] = field(default=None, metadata={"help": "Use only the first N names (quick tests)."})
    voices: list[str] = field(
        default_factory=lambda: ["espeak-ng:en-us", "espeak-ng:en-gb", "flite:kal16", "flite:slt", "flite:rms", "festival:kal_diphone"],
        metadata={"help": "Voices to synthesise, as 'engine:voice[@rRATE][@pPITCH]'."},
    )
    validation_voices: Optional[list[str]] = field(
        default=None, metadata={"help": "Speakers ('engine:voice', globs allowed) held out for validation. Default: one per engine."}
    )
    test_voices: Optional[list[str]] = field(
        default=None, metadata={"help": "Speakers held out for the test split. Default: one per engine with 3+ speakers."}
    )
    split_seed: int = field(default=0, metadata={"help": "Seed for choosing held-out speakers when none are listed."})
    data_dir: str = field(default="data/quickstart", metadata={"help": "Where clips, manifest and DatasetDict are cached."})
    synthesis_workers: Optional[int] = field(default=None, metadata={"help": "Parallel synthesis workers (default: all cores)."})
    augmentation: Optional[Union[dict, str]] = field(
        default=None,
        metadata={"help": "audiomentations transforms applied on the fly to training clips: {\"ClassName\": {kwargs}, ...}."},
    )
    max_duration_in_seconds: float = field(default=10.0, metadata={"help": "Drop training clips longer than this."})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Truncate the training split (debugging)."})
    max_eval_samples: Optional[int] = field(
        default=None, metadata={"help": "Evaluate on this many validation clips during training (the test split is always used whole)."}
    )
    preprocessing_only: bool = field(default=False, metadata={"help": "Only synthesise and split the data, then stop."})

    def synthesize_and_split(self, lexicon: list[DrugName]) -> DatasetDict:
        """Synthesise (cached) every name with every voice and split by voice."""
        return build_corpus(
            lexicon, self.voices, self.data_dir, self.validation_voices, self.test_voices,
            split_seed=self.split_seed, num_workers=self.synthesis_workers,
        )


def ensure_single_process_environment() -> None:
    """DeepSpeed initialises torch.distributed; without a launcher, act as a one-process launch."""
    if "RANK" in os.environ:
        return
    with socket.socket() as probe:  # a free port for the (single-member) process group
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def parse_arguments(dataclass_types: tuple[type, ...]) -> tuple:
    """Read the run's arguments from one JSON recipe (`script.py recipe.json`) or the command line."""
    parser = HfArgumentParser(dataclass_types)
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        recipe = read_recipe(sys.argv[1])
        if recipe.get("deepspeed"):
            ensure_single_process_environment()
        return parser.parse_dict(recipe)
    if "--deepspeed" in sys.argv:
        ensure_single_process_environment()
    return parser.parse_args_into_dataclasses()


def start_run(training_args: TrainingArguments) -> str | None:
    """Logging and seeding for a training run; returns the checkpoint to resume from, if the
    output folder holds one (rerunning a killed command picks up where it stopped)."""
    import datasets
    import transformers

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    datasets.utils.logging.set_verbosity_warning()
    set_seed(training_args.seed)
    last_checkpoint = get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
    if last_checkpoint:
        logging.getLogger(__name__).info("resuming from %s", last_checkpoint)
    return last_checkpoint
