"""Recipes: the arguments of one run, in one JSON file, and the data arguments every entry point shares."""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import logging
import os
import socket
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from datasets import Dataset, DatasetDict
from transformers import HfArgumentParser, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from ..audio.augmentation import build_augmenter
from ..speech.corpus import build_corpus, load_corpus
from ..speech.tts import parse_voices
from ..text.lexicon import DEFAULT_LEXICON, DrugName, load_lexicon
from .data import prepare_for_training
from .distributed import ProcessGroupError, check_process_group
from .precision import settle_cpu_precision
from .preflight import check_free_space, check_writable, corpus_bytes


class RecipeError(ValueError):
    """A recipe file that cannot be read."""


BASE_KEY = "base"  # a recipe's shared part: another recipe file, relative to this one


def read_recipe(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Load a recipe, dropping documentation keys (any key starting with '_', such as '_comment').

    `"base": "base.json"` reads that file first (relative to the recipe's folder); the recipe's
    own keys then replace the base's, each key's whole value (an `augmentation` block given in
    the recipe replaces the base's block, it is not merged into it)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {str(path)!r} does not exist; see recipes/ for examples")
    try:
        recipe = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RecipeError(f"recipe {str(path)!r} is not valid JSON: {error}") from None
    if not isinstance(recipe, dict):
        raise RecipeError(f"recipe {str(path)!r} must hold one JSON object of argument names and values")
    recipe = {key: value for key, value in recipe.items() if not key.startswith("_")}
    base = recipe.pop(BASE_KEY, None)
    if base is None:
        return recipe
    if not isinstance(base, str):
        raise RecipeError(f"recipe {str(path)!r}: {BASE_KEY!r} must be a file name, got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in _seen or base_path == path.resolve():
        raise RecipeError(f"recipe {str(path)!r}: {BASE_KEY!r} {base!r} leads back to itself")
    if not base_path.is_file():
        raise RecipeError(f"recipe {str(path)!r}: its {BASE_KEY} {base!r} does not exist (looked for {str(base_path)!r})")
    return {**read_recipe(base_path, (*_seen, path.resolve())), **recipe}


@dataclass
class DataTrainingArguments:
    lexicon: str = field(
        default=DEFAULT_LEXICON,
        metadata={"help": "Built-in lexicon ('common', 'generic', 'brand') or a file with one drug name per line."},
    )
    extra_lexicon: Optional[str] = field(
        default=None,
        metadata={"help": "A second list added to the lexicon: 'real-voice-words' adds the 18 ordinary words of the real-voice check "
                          "(see README), so a model trained on synthetic voices can be measured on recordings of real people."},
    )
    max_lexicon_names: Optional[int] = field(default=None, metadata={"help": "Use only the first N names (quick tests)."})
    voices: list[str] = field(
        default_factory=lambda: ["espeak-ng:en-us", "espeak-ng:en-gb", "flite:kal16", "flite:slt", "flite:rms", "festival:kal_diphone"],
        metadata={"help": "Voices to synthesise, as 'engine:voice[@rRATE][@pPITCH]'."},
    )
    validation_voices: Optional[list[str]] = field(
        default=None,
        metadata={"help": "Speakers ('engine:voice', globs allowed) held out for validation; they must be whole voice talents "
                          "(every speaker of a talent). Default: one talent per engine family with 3+ talents."},
    )
    test_voices: Optional[list[str]] = field(
        default=None, metadata={"help": "Speakers held out for the test split, as whole voice talents. Default: another talent per engine family."}
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
        default=None,
        metadata={"help": "Evaluate on, and fit the calibration on, this many validation clips (a random sample)."}
    )
    calibration_conditions: Optional[list[str]] = field(
        default=None,
        metadata={"help": "Hear each calibration clip under each of these: clean, an SNR in dB of white noise (10), or a telephone "
                          "codec (telephone, gsm). A model that gets clean validation clips right needs harder ones for its "
                          "ambiguous flag to learn from; the temperature and not-in-lexicon gap are fitted on the first "
                          "condition's clips (default: clean only)."},
    )
    max_test_samples: Optional[int] = field(
        default=None, metadata={"help": "Evaluate on a random sample of this many test clips (default: the whole test split)."}
    )
    sentences_per_voice: int = field(
        default=0,
        metadata={"help": "Also speak this many sentences around the names with every voice (refill requests, dictation; see "
                          "s2t_hf/speech/sentences.py): the training voices' join the train split, all are listed for spotting."},
    )
    drug_free_sentences_per_voice: int = field(default=0, metadata={"help": "Sentences without any drug name per voice (false alarms)."})
    drug_free_words_per_voice: int = field(
        default=0,
        metadata={"help": "Ordinary English words said alone per voice (s2t_hf/text/lexicons/common_words_en.txt), listed with "
                          "the drug-free sentences: a model that hears only drug names said alone takes any lone word for one."},
    )
    decoy_sentences_per_voice: int = field(
        default=0,
        metadata={"help": "Drug-free decoys per voice: the name sentences' carrier phrases with an ordinary English word in each "
                          "name's place ('can you refill my window please'), so the slot alone does not make a drug name."},
    )
    preprocessing_only: bool = field(default=False, metadata={"help": "Only synthesise and split the data, then stop."})

    def read_lexicon(self) -> list[DrugName]:
        return load_lexicon(self.lexicon, limit=self.max_lexicon_names, extra=self.extra_lexicon)

    def synthesize_and_split(self, lexicon: list[DrugName], writer: bool = True) -> DatasetDict:
        """Synthesise (cached) every name with every voice and split by voice, after checking
        that data_dir is writable and has room for the clips. A process that is not the
        `writer` of a multi-process run reads the splits the writer saved instead."""
        if not writer:
            return load_corpus(self.data_dir)
        check_writable(self.data_dir, "data_dir")
        check_free_space(self.data_dir, corpus_bytes(len(lexicon), len(parse_voices(self.voices))), "data_dir")
        return build_corpus(
            lexicon, self.voices, self.data_dir, self.validation_voices, self.test_voices,
            split_seed=self.split_seed, num_workers=self.synthesis_workers,
            sentences_per_voice=self.sentences_per_voice, drug_free_sentences_per_voice=self.drug_free_sentences_per_voice,
            drug_free_words_per_voice=self.drug_free_words_per_voice, decoy_sentences_per_voice=self.decoy_sentences_per_voice,
            sentence_names=load_lexicon(self.lexicon, limit=self.max_lexicon_names),  # drug names only, not the extra words
        )


    def model_ready_splits(self, splits: DatasetDict, processor, seed: int) -> tuple[Dataset, Dataset, Dataset]:
        """Train (augmented, duration-capped, optionally truncated), validation and test
        (optionally sampled) datasets that read and check their audio on the fly."""
        train = prepare_for_training(
            splits["train"], processor, build_augmenter(self.augmentation), self.max_duration_in_seconds, self.max_train_samples, seed
        )
        validation = prepare_for_training(splits["validation"], processor, max_samples=self.max_eval_samples, seed=seed, split="validation")
        return train, validation, prepare_for_training(splits["test"], processor, max_samples=self.max_test_samples, seed=seed, split="test")


def ensure_single_process_environment() -> None:
    """DeepSpeed initialises torch.distributed; without a launcher, act as a one-process launch."""
    if "RANK" in os.environ:
        return
    with socket.socket() as probe:  # a free port for the (single-member) process group
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def value_matches(value: Any, annotation: Any) -> bool:
    """Whether a JSON value fits a dataclass field's type (lenient where the type is exotic)."""
    origin = typing.get_origin(annotation)
    if annotation is Any or annotation is None or annotation is type(None):
        return value is None or annotation is Any
    if origin in (Union, types.UnionType):
        return any(value_matches(value, option) for option in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin in (list, tuple, set):
        (item, *_) = typing.get_args(annotation) or (Any,)
        return isinstance(value, list) and all(value_matches(element, item) for element in value)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return value in {member.value for member in annotation} or value in annotation.__members__
    return True  # a type JSON cannot express: let the dataclass judge


def check_recipe(recipe: dict[str, Any], dataclass_types: tuple[type, ...], path: str) -> None:
    """One clear line for a recipe key that no argument class knows, or a value of the wrong type."""
    fields = {}
    for dataclass_type in dataclass_types:
        hints = typing.get_type_hints(dataclass_type)
        fields.update({field.name: hints[field.name] for field in dataclasses.fields(dataclass_type) if field.init})
    for key, value in recipe.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            raise RecipeError(f"recipe {path!r}: unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else "; see run_ctc.py --help"))
        if not value_matches(value, fields[key]):
            expected = getattr(fields[key], "__name__", None) if isinstance(fields[key], type) else str(fields[key]).replace("typing.", "")
            raise RecipeError(f"recipe {path!r}: {key!r} must be {expected}, got {value!r} ({type(value).__name__})")
    deepspeed = recipe.get("deepspeed")
    if isinstance(deepspeed, str) and not Path(deepspeed).is_file():
        raise RecipeError(f"recipe {path!r}: 'deepspeed' names {deepspeed!r}, which does not exist; see ds_configs/")


def parse_arguments(dataclass_types: tuple[type, ...], argv: list[str] | None = None) -> tuple:
    """Read the run's arguments from a JSON recipe, optionally followed by overrides of any of
    its values (`script.py recipe.json --max_steps 100 --learning_rate 1e-4`), or from the
    command line alone."""
    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser(dataclass_types)
    if argv and argv[0].endswith(".json"):
        path, overrides = argv[0], argv[1:]
        recipe = read_recipe(path)
        check_recipe(recipe, dataclass_types, path)
        if recipe.get("deepspeed") or "--deepspeed" in overrides:
            ensure_single_process_environment()
        try:
            if not overrides:
                return parser.parse_dict(recipe)
            known = {option.lstrip("-") for action in parser._actions for option in action.option_strings}
            for flag in (argument for argument in overrides if argument.startswith("--")):
                name = flag[2:].split("=", 1)[0]
                if name not in known:
                    close = difflib.get_close_matches(name, sorted(known), n=1)
                    raise RecipeError(f"override {flag!r} is not an argument" + (f"; did you mean '--{close[0]}'?" if close else "; see --help"))
            # the recipe's values become the defaults that command-line flags override
            for action in parser._actions:
                if action.dest in recipe:
                    action.required = False
            parser.set_defaults(**recipe)
            return parser.parse_args_into_dataclasses(args=overrides)
        except (ValueError, TypeError) as error:  # e.g. TrainingArguments' own consistency checks
            raise RecipeError(f"recipe {path!r}: {error}") from None
    if "--deepspeed" in argv:
        ensure_single_process_environment()
    return parser.parse_args_into_dataclasses(args=argv)


def start_run(training_args: TrainingArguments) -> str | None:
    """Logging, seeding, bf16 only where the CPU has it, and a writable output folder for a training run; returns the checkpoint
    to resume from, if the output folder holds one (rerunning a killed command picks up where it stopped)."""
    import datasets
    import transformers

    logging.basicConfig(  # with several processes, one of them (per node) logs progress; the others only warnings
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S",
        level=logging.INFO if training_args.should_log else logging.WARNING,
    )
    transformers.utils.logging.set_verbosity_warning()
    datasets.utils.logging.set_verbosity_warning()
    set_seed(training_args.seed)
    check_process_group(training_args)
    settle_cpu_precision(training_args)
    if training_args.should_save:  # the one process that writes (see training/distributed.py)
        check_writable(training_args.output_dir, "output_dir")  # before hours of synthesis, not after
    last_checkpoint = get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
    if last_checkpoint:
        logging.getLogger(__name__).info("resuming from %s", last_checkpoint)
    return last_checkpoint


def run_with_clear_errors(main: typing.Callable[[], None], program: str) -> int:
    """Run a script's main; a problem with the user's input (recipe, lexicon, voices, data,
    folders) ends it with one line naming the problem and exit status 2, not a traceback."""
    from ..audio.reading import AudioError
    from ..speech.splits import SplitError
    from ..speech.tts import TTSError
    from ..text.lexicon import LexiconError
    from .preflight import PreflightError

    try:
        main()
    except (RecipeError, LexiconError, TTSError, SplitError, AudioError, PreflightError, ProcessGroupError) as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        return 2
    return 0
