"""Dynamic batching: clips that arrive together share one forward pass and one ranking.

Requests put a clip on a bounded queue and wait on a future; a worker thread takes the first
waiting clip, gathers more for up to `max_wait_ms` or until `max_batch` clips, scores them with
`S2T.score_batch` and answers each caller from its own row. A full queue is refused at once
(`QueueFull`): under overload callers are told to come back instead of waiting behind an
unbounded backlog.

`workers` threads batch side by side, sharing the one model (inference only reads it). On a
CPU this is where the cores go: PyTorch runs the small matrix products of a decoder step or a
name search on one core whatever its thread count (2-core AVX2 machine, 64 x 384 x 1536: 1.01 ms
with one thread, 1.01 with two), so two workers with one thread each serve 11.1 Whisper clips/s
where one worker with two threads serves 5.35 (benchmarks/results/serve_load.json; `s2t-hf serve
--workers`, which also sets the threads per worker).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from ..inference.recognizer import S2T, Recognition

logger = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """The server already holds as many waiting clips as it allows."""


@dataclass
class Job:
    clip: np.ndarray
    top_k: int
    allow_out_of_lexicon: bool
    future: Future = field(default_factory=Future)


@dataclass
class BatcherStats:
    batches: int = 0
    clips: int = 0
    largest_batch: int = 0


_STOP = object()


class DynamicBatcher:
    """Runs `recogniser` on batches of up to `max_batch` clips gathered for up to `max_wait_ms`,
    `workers` batches at a time; at most `max_queue` clips wait. `max_batch=1` (or
    `max_wait_ms=0` under light load) serves each clip alone."""

    def __init__(self, recogniser: S2T, max_batch: int = 16, max_wait_ms: float = 10.0, max_queue: int = 64, workers: int = 1):
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0 or workers < 1:
            raise ValueError(f"max_batch ({max_batch}), max_queue ({max_queue}) and workers ({workers}) must be at least 1, "
                             f"and max_wait_ms ({max_wait_ms}) not negative")
        self.recogniser = recogniser
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.workers = workers
        self.stats = BatcherStats()
        self._stats_lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        if not self._threads:
            self._threads = [
                threading.Thread(target=self._serve, name=f"s2t-hf-batcher-{index}", daemon=True) for index in range(self.workers)
            ]
            for thread in self._threads:
                thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the clips already queued, then end the workers."""
        for _ in self._threads:
            self._queue.put(_STOP)  # one each: a worker that meets one puts it back until its batch is answered
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def submit(self, clip: np.ndarray, top_k: int = 5, allow_out_of_lexicon: bool = False) -> Future:
        """Queue a 16 kHz mono clip; the future gives its `Recognition`. Raises `QueueFull`."""
        job = Job(clip, top_k, allow_out_of_lexicon)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"{self.max_queue} clips are already waiting") from None
        return job.future

    def _gather(self) -> tuple[list[Job], bool]:
        """The next batch, and whether the worker was told to stop."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        jobs = [first]
        deadline = time.monotonic() + self.max_wait
        while len(jobs) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                self._queue.put(_STOP)  # answer what was gathered, then stop
                break
            jobs.append(job)
        return jobs, False

    def _serve(self) -> None:
        while True:
            jobs, stop = self._gather()
            if stop:
                return
            try:
                results = self.run(jobs)
            except Exception as error:  # one bad batch must not end the server: its callers get the error
                logger.exception("a batch of %d clips failed", len(jobs))
                for job in jobs:
                    job.future.set_exception(error)
                continue
            for job, result in zip(jobs, results, strict=True):
                job.future.set_result(result)

    def run(self, jobs: list[Job]) -> list[Recognition]:
        """One forward pass and one ranking for the batch; each job answered with its own options."""
        recogniser = self.recogniser
        scores = recogniser.score_batch([job.clip for job in jobs], top_k=max(job.top_k for job in jobs))
        with self._stats_lock:
            self.stats.batches += 1
            self.stats.clips += len(jobs)
            self.stats.largest_batch = max(self.stats.largest_batch, len(jobs))
        return [
            recogniser.results(scores.select([row]), job.top_k, job.allow_out_of_lexicon)[0]
            for row, job in enumerate(jobs)
        ]
