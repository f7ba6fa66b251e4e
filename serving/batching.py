"""Server-side dynamic batching with TF Serving's `--batching_parameters_file` semantics.

Concurrent requests for the same signature (and the same per-example input shapes) are
concatenated along dimension 0 and run as one batch [shared_batch_scheduler.h]:

- a batch closes when it holds `max_batch_size` examples; an open batch is handed to a
  free batch thread once its oldest task has waited `batch_timeout_micros` (0: as soon
  as a thread is free, so batches form only while every thread is busy);
- a queue holds at most `max_enqueued_batches` batches (the open one included);
  a task that would need one more gets UNAVAILABLE, as TF Serving answers;
- `num_batch_threads` threads run batches, shared by every queue;
- `allowed_batch_sizes` pads a batch up to the next allowed size with copies of its
  first example, and the padding is dropped from the outputs.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Mapping

import numpy as np

from serving.config_files import BatchingParameters, read_text_proto
from serving.errors import (
    ConfigError,
    InternalError,
    InvalidArgumentError,
    ServingError,
    UnavailableError,
)

Arrays = dict[str, np.ndarray]
#: The answer to a task the server stops before its batch runs.
STOPPING = "the server is stopping: the batch of this request did not run"


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """`BatchingParameters` with TF Serving's defaults for the fields left out."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    allowed_batch_sizes: tuple[int, ...] = ()

    def __post_init__(self):
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise ConfigError(f"batch_timeout_micros must be non-negative, got "
                              f"{self.batch_timeout_micros}")
        sizes = self.allowed_batch_sizes
        if sizes and (list(sizes) != sorted(set(sizes)) or sizes[-1] != self.max_batch_size):
            raise ConfigError(f"allowed_batch_sizes must increase and end with max_batch_size "
                              f"({self.max_batch_size}), got {list(sizes)}")

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> BatchingOptions:
        params = read_text_proto(path, BatchingParameters)
        if params.pad_variable_length_inputs:
            raise ConfigError(f"{path}: pad_variable_length_inputs is not supported by this "
                              f"server; requests batch only with same-shaped requests")
        values = {name: getattr(params, name).value
                  for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                               "num_batch_threads") if params.HasField(name)}
        try:
            return cls(**values, allowed_batch_sizes=tuple(params.allowed_batch_sizes))
        except ValueError as error:
            raise ConfigError(f"{path}: {error}") from error


@dataclasses.dataclass
class _Task:
    run: Callable[[Arrays], Arrays]
    inputs: Arrays
    size: int
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    outputs: Arrays | None = None
    error: ServingError | None = None


@dataclasses.dataclass
class _Queue:
    open: list[_Task] = dataclasses.field(default_factory=list)
    open_size: int = 0
    opened_at: float = 0.0
    closed: collections.deque = dataclasses.field(default_factory=collections.deque)

    def close_open_batch(self) -> None:
        self.closed.append(self.open)
        self.open, self.open_size = [], 0


def batch_size(inputs: Mapping[str, np.ndarray]) -> int:
    """The common 0th dimension of a request's inputs, with BatchingSession's errors."""
    sizes = set()
    for array in inputs.values():
        if array.ndim == 0:
            raise InvalidArgumentError(
                "Batching Run() input tensors must have at least one dimension")
        sizes.add(array.shape[0])
    if len(sizes) > 1:
        raise InvalidArgumentError(
            "Batching Run() input tensors must have equal 0th-dimension size")
    return sizes.pop() if sizes else 0


class BatchScheduler:
    """Batches `run(inputs)` calls that share a key; see the module docstring."""

    def __init__(self, options: BatchingOptions):
        self.options = options
        self._queues: dict[tuple, _Queue] = {}
        self._condition = threading.Condition()
        self._stopped = False
        self._threads = [threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
                         for i in range(options.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    def run(self, key: tuple, run: Callable[[Arrays], Arrays], inputs: Arrays) -> Arrays:
        """Runs `inputs` as part of a batch of same-key tasks; blocks until done.

        `key` identifies what may be batched together (servable, signature, input
        dtypes and per-example shapes); `run` computes a whole batch.
        """
        size = batch_size(inputs)
        if size == 0:
            return run(inputs)
        limit = self.options.max_batch_size
        if size > limit:
            raise InvalidArgumentError(
                f"Task size {size} is larger than maximum input batch size {limit}")
        task = _Task(run, inputs, size)
        with self._condition:
            if self._stopped:
                raise UnavailableError(STOPPING)
            queue = self._queues.setdefault(key, _Queue())
            needs_new_batch = not queue.open or queue.open_size + size > limit
            enqueued = len(queue.closed) + bool(queue.open)
            if needs_new_batch and enqueued >= self.options.max_enqueued_batches:
                raise UnavailableError(
                    "The batch scheduling queue to which this task was submitted is full")
            if queue.open and needs_new_batch:
                queue.close_open_batch()
            if not queue.open:
                queue.opened_at = time.monotonic()
            queue.open.append(task)
            queue.open_size += size
            if queue.open_size == limit:
                queue.close_open_batch()
            self._condition.notify()
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    def stop(self) -> None:
        """Answers every task still queued with UNAVAILABLE (its caller would otherwise
        wait forever, and so would a process exiting, which joins the gRPC threads),
        lets the batches running finish, and stops the batch threads."""
        with self._condition:
            self._stopped = True
            waiting = [task for queue in self._queues.values()
                       for batch in (*queue.closed, queue.open) for task in batch]
            self._queues.clear()
            self._condition.notify_all()
        for task in waiting:
            task.error = UnavailableError(STOPPING)
            task.done.set()
        for thread in self._threads:
            thread.join()

    def _next_batch(self) -> list[_Task] | None:
        """Waits for a closed batch, or an open one whose timeout has passed."""
        timeout = self.options.batch_timeout_micros / 1e6
        while not self._stopped:
            wait = None
            for queue in self._queues.values():
                if queue.closed:
                    return queue.closed.popleft()
            now = time.monotonic()
            for queue in self._queues.values():
                if queue.open:
                    remaining = queue.opened_at + timeout - now
                    if remaining <= 0:
                        batch = queue.open
                        queue.open, queue.open_size = [], 0
                        return batch
                    wait = remaining if wait is None else min(wait, remaining)
            self._condition.wait(wait)
        return None

    def _work(self) -> None:
        while True:
            with self._condition:
                item = self._next_batch()
            if item is None:
                return
            self._process(item)

    def _process(self, tasks: list[_Task]) -> None:
        sizes = [task.size for task in tasks]
        total = sum(sizes)
        padded = next((s for s in self.options.allowed_batch_sizes if s >= total), total)
        inputs = {}
        for alias in tasks[0].inputs:
            parts = [task.inputs[alias] for task in tasks]
            if padded > total:
                parts.append(np.repeat(parts[0][:1], padded - total, axis=0))
            inputs[alias] = np.concatenate(parts)
        try:
            outputs = tasks[0].run(inputs)  # same key, same computation
            for alias, array in outputs.items():
                if array.ndim == 0 or array.shape[0] != padded:
                    raise InternalError(
                        f"Batched output tensor {alias}'s 0th dimension does not equal the "
                        f"sum of the 0th dimension sizes of the input tensors")
            start = 0
            for task in tasks:
                task.outputs = {alias: array[start:start + task.size]
                                for alias, array in outputs.items()}
                start += task.size
        except Exception as error:  # every waiting client must hear why its batch failed
            failure = error if isinstance(error, ServingError) else InternalError(f"{error}")
            for task in tasks:
                task.error = failure
        finally:
            for task in tasks:
                task.done.set()
