"""Several processes (`accelerate launch`, `torchrun`): who synthesises, who writes, and a process
group that really formed.

With N processes every step of a run happens N times unless told otherwise. The rule here is
the Trainer's own: the process that saves (`TrainingArguments.should_save`: the main process,
or each node's main process with `save_on_each_node`) synthesises the corpus and writes the
manifests, the `DatasetDict`, calibration, report and model card; the others wait for it and
read what it wrote. Training and evaluation are shared through the Trainer (DDP, DeepSpeed),
whose `gather_for_metrics` drops the clips the distributed sampler repeats to even out the last
batch.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from transformers import TrainingArguments


class ProcessGroupError(RuntimeError):
    """A launcher started several processes that did not join one process group."""


def launched_processes() -> int:
    """How many processes the launcher (torchrun, `accelerate launch`, DeepSpeed) says it started."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def check_process_group(training_args: TrainingArguments) -> None:
    """Refuse a launch whose processes would each train alone, writing the same files: on a
    machine without GPUs, `accelerate launch --multi_gpu` (or torchrun) starts the processes,
    but they join a (gloo) group only when the run is told to use the CPU."""
    launched = launched_processes()
    if launched > 1 and training_args.world_size != launched:
        raise ProcessGroupError(
            f"the launcher started {launched} processes but this one sees a world of {training_args.world_size}: "
            "on a machine without GPUs add \"use_cpu\": true to the recipe (or --use_cpu true) so the processes join one "
            "gloo process group (see accelerate_configs/cpu-2-processes.yaml and the README's 'Several processes and machines')"
        )


@contextmanager
def writer_first(training_args: TrainingArguments, desc: str):
    """Run the block in the writing process first (see module docstring), then in the others,
    which find its work done. Yields whether this process is the writer."""
    with training_args.main_process_first(local=training_args.save_on_each_node, desc=desc):
        yield training_args.should_save
