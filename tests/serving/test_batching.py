"""Dynamic batching: the scheduler's semantics, then a batching server over gRPC."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest

from serving import errors
from serving.batching import BatchingOptions, BatchScheduler
from serving.client import Client
from serving.server import ModelServer
from tests.serving.exported_model import MODEL_NAME, assert_same_top5, expected_top5


class Doubler:
    """A batch computation that records the batch sizes it saw; `gate` holds it."""

    def __init__(self):
        self.sizes, self.gate = [], threading.Event()
        self.gate.set()

    def __call__(self, inputs):
        self.gate.wait()
        self.sizes.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2, "n": np.full(len(inputs["x"]), len(inputs["x"]))}


def run_concurrently(scheduler, run, tasks):
    results, failures = {}, []

    def submit(index, inputs):
        try:
            results[index] = scheduler.run(("key",), run, inputs)
        except errors.ServingError as error:
            failures.append(error)

    threads = [threading.Thread(target=submit, args=item) for item in enumerate(tasks)]
    for thread in threads:
        thread.start()
    return threads, results, failures


def test_concurrent_tasks_share_batches_and_get_their_own_rows():
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=8, batch_timeout_micros=200_000,
                                               num_batch_threads=1))
    run = Doubler()
    tasks = [{"x": np.arange(i, i + 2, dtype=np.float32)} for i in range(0, 16, 2)]
    threads, results, failures = run_concurrently(scheduler, run, tasks)
    for thread in threads:
        thread.join()
    scheduler.stop()
    assert failures == []
    assert sum(run.sizes) == 16 and len(run.sizes) < 8  # batched, not one call per task
    assert max(run.sizes) <= 8
    for index, task in enumerate(tasks):
        np.testing.assert_array_equal(results[index]["y"], task["x"] * 2)


def test_stopping_answers_the_queued_tasks_and_lets_the_running_batch_finish():
    # A task left waiting when the server stops would block its gRPC thread forever, and
    # with it the exit of the process, which joins those threads.
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=1, num_batch_threads=1))
    run = Doubler()
    run.gate.clear()  # the first batch holds the only batch thread
    one = {"x": np.ones(1, np.float32)}
    threads, results, failures = run_concurrently(scheduler, run, [one] * 3)
    for _ in range(500):
        with scheduler._condition:
            queued = sum(len(q.open) + sum(map(len, q.closed))
                         for q in scheduler._queues.values())
        if queued == 2:
            break
        threading.Event().wait(0.01)
    stopper = threading.Thread(target=scheduler.stop)
    stopper.start()
    for thread in threads:
        thread.join(timeout=1)
    assert len(failures) == 2 and len(results) == 0  # the queued two, at once
    assert all(isinstance(f, errors.UnavailableError) for f in failures)
    run.gate.set()
    stopper.join(timeout=30)
    for thread in threads:
        thread.join(timeout=30)
    assert not stopper.is_alive() and len(results) == 1  # the running batch finished
    with pytest.raises(errors.UnavailableError, match="the server is stopping"):
        scheduler.run(("key",), run, one)


def test_full_queue_answers_unavailable_and_oversized_tasks_invalid_argument():
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=1, max_enqueued_batches=1,
                                               num_batch_threads=1))
    run = Doubler()
    run.gate.clear()  # the batch thread blocks on the first batch
    one = {"x": np.ones(1, np.float32)}
    threads, results, failures = run_concurrently(scheduler, run, [one] * 6)
    for _ in range(200):
        if len(failures) >= 4:
            break
        threading.Event().wait(0.01)
    run.gate.set()
    for thread in threads:
        thread.join()
    # One task runs, one waits in the queue; the other four are refused.
    assert len(results) == 2 and len(failures) == 4
    assert all(isinstance(f, errors.UnavailableError) for f in failures)
    assert failures[0].message == \
        "The batch scheduling queue to which this task was submitted is full"
    with pytest.raises(errors.InvalidArgumentError,
                       match=r"Task size 2 is larger than maximum input batch size 1$"):
        scheduler.run(("key",), run, {"x": np.ones(2, np.float32)})
    scheduler.stop()


def test_allowed_batch_sizes_pad_and_the_padding_is_dropped():
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=8, allowed_batch_sizes=(4, 8)))
    run = Doubler()
    outputs = scheduler.run(("key",), run, {"x": np.array([1.0, 2.0, 3.0], np.float32)})
    scheduler.stop()
    assert run.sizes == [4]
    np.testing.assert_array_equal(outputs["y"], [2.0, 4.0, 6.0])
    np.testing.assert_array_equal(outputs["n"], [4, 4, 4])


def test_batching_parameters_file(tmp_path):
    path = tmp_path / "batching.txt"
    path.write_text("max_batch_size { value: 16 }\nbatch_timeout_micros { value: 500 }\n"
                    "num_batch_threads { value: 3 }\nallowed_batch_sizes: 8\n"
                    "allowed_batch_sizes: 16\n")
    options = BatchingOptions.from_file(path)
    assert (options.max_batch_size, options.batch_timeout_micros, options.num_batch_threads,
            options.max_enqueued_batches, options.allowed_batch_sizes) == (16, 500, 3, 10,
                                                                            (8, 16))
    path.write_text("max_batch_size { value: 16 }\nallowed_batch_sizes: 8\n")
    with pytest.raises(ValueError, match=r"batching\.txt: allowed_batch_sizes must increase and "
                                         "end with max_batch_size"):
        BatchingOptions.from_file(path)
    path.write_text("max_batch_size: 16\n")
    with pytest.raises(ValueError, match=r"batching\.txt: not a valid BatchingParameters"):
        BatchingOptions.from_file(path)


@pytest.fixture(scope="module")
def batching_server(exported, tmp_path_factory):
    params = tmp_path_factory.mktemp("batching") / "batching.txt"
    params.write_text("max_batch_size { value: 1 }\nmax_enqueued_batches { value: 1 }\n"
                      "num_batch_threads { value: 1 }\n")
    with ModelServer(exported.model_dir, MODEL_NAME, port=0, enable_batching=True,
                     batching_parameters_file=params,
                     file_system_poll_wait_seconds=0) as server:
        yield server


def test_batching_server_serves_concurrent_clients_or_answers_unavailable(
        batching_server, exported):
    """A one-slot queue: 16 concurrent clients without retries are served right or refused
    with UNAVAILABLE, and clients that retry on UNAVAILABLE all get through."""
    images = list(exported.images.values())
    expected = expected_top5(exported.model, images)
    outcomes = []

    def query(worker: int, retries: int):
        index = worker % len(images)
        try:
            with Client(batching_server.address, MODEL_NAME, retries=retries,
                        backoff_seconds=0.05, timeout=60) as client:
                outcomes.append((index, client.classify([images[index]])[0]))
        except errors.ServingError as error:
            outcomes.append((index, error))

    for retries in (0, 20):
        outcomes.clear()
        threads = [threading.Thread(target=query, args=(i, retries)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        refused = [r for _, r in outcomes if isinstance(r, errors.ServingError)]
        assert all(r.code == grpc.StatusCode.UNAVAILABLE for r in refused)
        assert refused == [] if retries else refused
        for index, result in outcomes:
            if not isinstance(result, errors.ServingError):
                assert_same_top5([result], [expected[index]])
