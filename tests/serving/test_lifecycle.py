"""Versions coming and going as in TF Serving's "latest" policy: a base path without
versions yet, rollback by deleting the newest, unloading when none is left, load
failures retried then END, and the start-up flags TF Serving refuses or ignores."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time

import grpc
import pytest
from tensorflow_serving.apis import get_model_status_pb2, model_pb2

from serving import errors
from serving.client import Client
from serving.server import ModelServer, ServerProcess
from tests.serving.exported_model import MODEL_NAME

POLL = 0.1
State = get_model_status_pb2.ModelVersionStatus.State
LOADING, AVAILABLE, END = State.LOADING, State.AVAILABLE, State.END


def wait_for(condition, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {condition}"
        time.sleep(POLL / 2)
    return result


def states(server) -> dict[int, int]:
    try:
        return {s.version: s.state for s in server.core.status(
            model_pb2.ModelSpec(name=MODEL_NAME))}
    except errors.NotFoundError:
        return {}


def test_a_base_path_without_versions_is_polled_until_one_appears(exported, tmp_path,
                                                                   capfd):
    base = tmp_path / "models"  # does not exist yet
    with ModelServer(base, MODEL_NAME, port=0, file_system_poll_wait_seconds=POLL) as server:
        assert (f"No versions of servable {MODEL_NAME} found under base path {base}. Did you "
                f"forget to name your leaf directory as a number (eg. '/1/')?") in \
            capfd.readouterr().err
        image = next(iter(exported.images.values()))
        with Client(server.address, MODEL_NAME, retries=0) as client:
            with pytest.raises(errors.NotFoundError, match="Latest\\(alexnet\\)"):
                client.classify([image])
            shutil.copytree(exported.model_dir / "1", base / "1")
            wait_for(lambda: states(server).get(1) == AVAILABLE, "version 1 AVAILABLE")
            assert len(client.classify([image])[0]) == 5


def test_rollback_and_removal_under_load(exported, tmp_path):
    base = tmp_path / "models"
    for version in (1, 2):
        shutil.copytree(exported.model_dir / "1", base / str(version))
    image = next(iter(exported.images.values()))
    with ModelServer(base, MODEL_NAME, port=0, file_system_poll_wait_seconds=POLL) as server:
        assert states(server) == {2: AVAILABLE}
        failures, served, stop = [], [], threading.Event()
        removing_the_last = threading.Event()

        def load():
            with Client(server.address, MODEL_NAME, retries=0, timeout=30) as client:
                while not stop.is_set():
                    try:
                        client.classify([image])
                        served.append(time.monotonic())
                    except errors.NotFoundError:
                        # From the moment the last version's files start to go, NOT_FOUND
                        # is the answer (rmtree empties the directory before removing it).
                        if not removing_the_last.is_set():
                            failures.append("NOT_FOUND while a version was there")
                    except errors.ServingError as error:
                        failures.append(str(error))

        thread = threading.Thread(target=load)
        thread.start()
        try:
            time.sleep(0.5)
            shutil.rmtree(base / "2")  # rollback: version 1 comes back
            wait_for(lambda: states(server) == {2: END, 1: AVAILABLE}, "version 1 served again",
                     timeout=20)
            count = len(served)
            wait_for(lambda: len(served) > count + 3, "requests on version 1")
            removing_the_last.set()
            shutil.rmtree(base / "1")  # nothing left: unloaded
            wait_for(lambda: states(server).get(1) == END, "version 1 unloaded")
        finally:
            stop.set()
            thread.join()
        assert not failures, failures[:3]
        with Client(server.address, MODEL_NAME, retries=0) as client, \
                pytest.raises(errors.NotFoundError,
                              match=r"Servable not found for request: Latest\(alexnet\)"):
            client.classify([image])


def test_a_version_that_fails_to_load_is_retried_then_ends_with_its_error(exported,
                                                                           tmp_path):
    base = tmp_path / "models"
    shutil.copytree(exported.model_dir / "1", base / "1")
    with ModelServer(base, MODEL_NAME, port=0, file_system_poll_wait_seconds=POLL,
                     max_num_load_retries=2, load_retry_interval_micros=200_000) as server:
        (base / "2").mkdir()
        (base / "2" / "saved_model.pb").write_bytes(b"not a SavedModel")
        wait_for(lambda: states(server).get(2) == LOADING, "version 2 LOADING (retrying)")
        wait_for(lambda: states(server).get(2) == END, "version 2 END after its retries")
        status = server.core.status(model_pb2.ModelSpec(name=MODEL_NAME))[0]
        assert status.version == 2 and status.status.error_code != 0
        assert status.status.error_message
        assert states(server)[1] == AVAILABLE  # version 1 kept serving
        # A version without its variables: END with NOT_FOUND and the loader's message.
        shutil.copytree(exported.model_dir / "1", base / "3")
        (base / "3" / "variables" / "variables.index").unlink()
        wait_for(lambda: states(server).get(3) == END, "version 3 END after its retries")
        status = server.core.status(model_pb2.ModelSpec(name=MODEL_NAME, version={"value": 3}))[0]
        assert status.status.error_code == grpc.StatusCode.NOT_FOUND.value[0]
        assert "variables" in status.status.error_message
        assert states(server)[1] == AVAILABLE


@pytest.mark.slow
def test_tf_servings_start_up_rules(exported, tmp_path):
    with pytest.raises(ValueError, match=r"^server_options.batching_parameters_file is set "
                                         r"without setting server_options.enable_batching to "
                                         r"true.$"):
        ModelServer(exported.model_dir, MODEL_NAME, port=0,
                    batching_parameters_file=tmp_path / "batching.txt")
    result = subprocess.run(
        [sys.executable, "-m", "serving", "serve", f"--model_base_path={exported.model_dir}",
         f"--batching_parameters_file={tmp_path / 'batching.txt'}"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2  # a usage error, as the README says
    assert "batching_parameters_file is set without setting" in result.stderr

    with ServerProcess(exported.model_dir, MODEL_NAME, "--tensorflow_session_parallelism=0",
                       "--tensorflow_intra_op_parallelism=2") as process:
        assert any(line.startswith("unknown argument: --tensorflow_session_parallelism=0")
                   for line in process.output)
        with Client(process.address, MODEL_NAME) as client:
            assert client.classify([next(iter(exported.images.values()))])
    # A clean stop on SIGTERM, exit 143 as every tool here.
    assert process.process.returncode == 143, "\n".join(process.output)


def test_health_falls_back_to_model_status_without_the_health_service(exported, capsys):
    from serving.__main__ import main

    with ModelServer(exported.model_dir, MODEL_NAME, port=0,
                     enable_grpc_healthcheck_service=False) as server:
        with Client(server.address, MODEL_NAME, retries=0) as client:
            assert client.health() == "SERVING"  # from GetModelStatus
        assert main(["status", "--server", server.address]) == 0
        assert "alexnet version 1: AVAILABLE" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--version"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("TensorFlow ModelServer: ")
    assert printed[1].startswith("TensorFlow Library: 2.")


def test_a_failing_warmup_record_is_one_line_naming_it(exported, tmp_path, capfd):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    from serving.tensors import to_tensor_proto

    base = tmp_path / "models"
    shutil.copytree(exported.model_dir / "1", base / "1")
    request = predict_pb2.PredictRequest()
    request.inputs["image_bytes"].CopyFrom(to_tensor_proto([b"not an image"]))
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request))
    warmup = base / "1" / "assets.extra" / "tf_serving_warmup_requests"
    with tf.io.TFRecordWriter(str(warmup)) as writer:
        writer.write(log.SerializeToString())
    # At start-up a model that does not load stops the server, as tensorflow_model_server
    # (load_servables_fast.cc): one line, the record named.
    with pytest.raises(ValueError) as raised:
        ModelServer(base, MODEL_NAME, port=0, max_num_load_retries=0).start()
    assert str(raised.value).startswith(
        "cannot start the server: UNKNOWN: 1 servable(s) did not become available: "
        f"{{{{{{name: {MODEL_NAME} version: 1}} due to error: {warmup}: warmup record 1 "
        f"failed: ")
    err = capfd.readouterr().err
    assert f"{warmup}: warmup record 1 failed: assertion failed: [not a JPEG or PNG image]" \
        in err
    assert "Traceback" not in err
