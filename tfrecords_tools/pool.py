"""Worker processes that cannot be lost silently.

`multiprocessing.Pool` loses the task of a worker that the OOM killer (or any SIGKILL,
or a crash in a codec) takes, and then waits for it forever.  Here each worker has its
own pipe and its own slot saying which item of its task it is on, and the parent waits
on the workers' pipes and process sentinels together: a dead worker ends the run at
once with an error naming the item it was working on.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import multiprocessing
import signal
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait

from tfrecords_tools.errors import WorkerError

_current = None  # in a worker: the shared slot of the item in progress


def working_on(item: int) -> None:
    """Called by a task for each of its items, so that a crash can be blamed on one."""
    if _current is not None:
        _current.value = item


def _serve(connection, current, initializer, initargs) -> None:
    global _current
    # Ctrl-C reaches the whole process group: the parent alone answers it.  The worker
    # started with SIGINT blocked (`Pool`), so one sent during its start-up is dropped
    # here instead of printing a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _current = current
    if initializer is not None:
        initializer(*initargs)
    while (task := connection.recv()) is not None:
        ticket, function, args = task
        current.value = 0
        try:
            connection.send((ticket, True, function(*args)))
        except Exception as error:
            try:
                connection.send((ticket, False, error))
            except Exception:  # an exception that does not pickle: its text then
                connection.send((ticket, False, WorkerError(
                    f"{type(error).__name__}: {error}\n{traceback.format_exc()}")))


@dataclasses.dataclass
class _Worker:
    process: multiprocessing.Process
    connection: object
    current: object
    tasks: collections.deque  # tickets in the order sent, the first being worked on


class Pool:
    """`processes` spawned workers running `function(*args)` tasks.

    Spawned, not forked: the workers import the image codecs, not the parent's
    TensorFlow.  Use as a context manager; `submit` returns a ticket, `result` waits
    for a ticket's result (dealing with the others that arrive meanwhile).
    """

    def __init__(self, processes: int, initializer: Callable | None = None,
                 initargs: tuple = ()):
        context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._results: dict[int, tuple[bool, object]] = {}
        self._items: dict[int, Sequence[str]] = {}
        self._next_ticket = 0
        try:
            for _ in range(processes):
                parent, child = context.Pipe()
                current = context.RawValue("i", 0)
                process = context.Process(target=_serve, daemon=True,
                                          args=(child, current, initializer, initargs))
                # The child inherits the blocked mask; the parent gets a Ctrl-C that
                # came meanwhile as soon as the mask is restored.
                mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
                try:
                    process.start()
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                child.close()
                self._workers.append(_Worker(process, parent, current, collections.deque()))
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, kind, *_) -> None:
        self.close(graceful=kind is None)

    def submit(self, function: Callable, args: tuple, items: Sequence[str]) -> int:
        """Sends a task to the least busy worker; `items` name what the task works on
        (the task calls `working_on(i)` as it reaches item i)."""
        worker = min(self._workers, key=lambda w: len(w.tasks))
        ticket = self._next_ticket
        self._next_ticket += 1
        self._items[ticket] = items
        worker.tasks.append(ticket)
        try:
            worker.connection.send((ticket, function, args))
        except OSError:  # a broken pipe: the worker died
            worker.tasks.pop()
            self._died(worker)
        return ticket

    def result(self, ticket: int):
        """The task's return value; a task's exception, or its worker's death, raises
        `WorkerError` naming the item."""
        while ticket not in self._results:
            self._receive()
        ok, value = self._results.pop(ticket)
        items = self._items.pop(ticket)
        if not ok:
            raise WorkerError(f"a worker process failed on {self._describe(items, None)}: "
                              f"{type(value).__name__}: {value}") from value
        return value

    def broadcast(self, function: Callable, args: tuple) -> None:
        """Runs `function(*args)` once in every worker, and waits for all of them."""
        tickets = []
        for worker in self._workers:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._items[ticket] = ()
            worker.connection.send((ticket, function, args))
            worker.tasks.append(ticket)
            tickets.append(ticket)
        for ticket in tickets:
            self.result(ticket)

    def _receive(self) -> None:
        by_handle = {}
        for worker in self._workers:
            by_handle[worker.connection] = worker
            by_handle[worker.process.sentinel] = worker
        for ready in wait(list(by_handle)):
            worker = by_handle[ready]
            if ready is worker.connection:
                try:
                    ticket, ok, value = worker.connection.recv()
                except (EOFError, OSError):  # the worker died: its sentinel says how
                    self._died(worker)
                worker.tasks.remove(ticket)
                self._results[ticket] = (ok, value)
            elif not worker.connection.poll():
                self._died(worker)

    def _died(self, worker: _Worker):
        worker.process.join(1)
        code = worker.process.exitcode
        how = (f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exited with status {code}")
        hint = " (the out-of-memory killer?)" if code == -signal.SIGKILL else ""
        items = self._items.get(worker.tasks[0], ()) if worker.tasks else ()
        raise WorkerError(f"worker process {worker.process.pid} {how}{hint} while working on "
                          f"{self._describe(items, worker.current.value)}")

    @staticmethod
    def _describe(items: Sequence[str], index: int | None) -> str:
        if not items:
            return "no task"
        if index is not None and 0 <= index < len(items):
            return items[index]
        return items[0] if len(items) == 1 else f"one of {items[0]} .. {items[-1]}"

    def close(self, graceful: bool = False) -> None:
        """Stops the workers: asks them to finish (graceful) or terminates them."""
        for worker in self._workers:
            if graceful and worker.process.is_alive():
                with contextlib.suppress(OSError):  # it died meanwhile
                    worker.connection.send(None)
            else:
                worker.process.terminate()
        for worker in self._workers:
            worker.process.join(5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.connection.close()
        self._workers = []


class InlinePool:
    """`Pool`'s interface, running each task at once in this process (one process)."""

    def __init__(self, initializer: Callable | None = None, initargs: tuple = ()):
        if initializer is not None:
            initializer(*initargs)
        self._results: dict[int, tuple[bool, object, Sequence[str]]] = {}
        self._next_ticket = 0

    def __enter__(self) -> InlinePool:
        return self

    def __exit__(self, *_) -> None:
        pass

    def submit(self, function: Callable, args: tuple, items: Sequence[str]) -> int:
        ticket = self._next_ticket
        self._next_ticket += 1
        try:
            self._results[ticket] = (True, function(*args), items)
        except Exception as error:
            self._results[ticket] = (False, error, items)
        return ticket

    def result(self, ticket: int):
        ok, value, items = self._results.pop(ticket)
        if not ok:
            raise WorkerError(f"converting {Pool._describe(items, None)} failed: "
                              f"{type(value).__name__}: {value}") from value
        return value

    def broadcast(self, function: Callable, args: tuple) -> None:
        function(*args)
