"""`--model_config_file`: several models at once, version policies, version labels moved
while serving, config reloads (the file polled, and HandleReloadConfigRequest), with TF
Serving's messages (model_servers/server_core.cc, model_service_impl.cc, server.cc)."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.request

import grpc
import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import (
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.client import Client
from serving.server import ModelServer, ServerProcess
from serving.server_core import ModelServerConfig
from serving.tensors import to_tensor_proto
from tests.serving.test_lifecycle import AVAILABLE, END, POLL, wait_for
from tests.serving.test_rest import free_port


def model_entry(name: str, base, policy: str = "", labels: dict[str, int] | None = None,
                platform: str = "tensorflow") -> str:
    label_lines = "".join(f' version_labels {{ key: "{k}" value: {v} }}'
                          for k, v in (labels or {}).items())
    policy_line = f" model_version_policy {{ {policy} }}" if policy else ""
    platform_line = f' model_platform: "{platform}"' if platform else ""
    return (f'config {{ name: "{name}" base_path: "{base}"{platform_line}{policy_line}'
            f'{label_lines} }}')


def config_text(*entries: str) -> str:
    return "model_config_list {\n  " + "\n  ".join(entries) + "\n}\n"


def parse(text: str) -> ModelServerConfig:
    return text_format.Parse(text, ModelServerConfig())


@pytest.fixture(scope="module")
def versions(exported, tmp_path_factory):
    """A base path with versions 1, 2 and 3 of the test export, and one with version 1."""
    root = tmp_path_factory.mktemp("models")
    for version in (1, 2, 3):
        shutil.copytree(exported.model_dir / "1", root / "alexnet" / str(version))
    shutil.copytree(exported.model_dir / "1", root / "other" / "1")
    return root


def states(server, name: str) -> dict[int, int]:
    return {s.version: s.state for s in server.core.status(model_pb2.ModelSpec(name=name))}


def predict_version(stub, exported, name: str, **spec) -> int:
    """The version that answered a Predict of one image."""
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=name, **spec))
    request.inputs["image_bytes"].CopyFrom(to_tensor_proto(
        np.array([next(iter(exported.images.values()))], dtype=object)))
    return stub.Predict(request, timeout=60).model_spec.version.value


def label_serves(stub, exported, label: str) -> bool:
    try:
        return bool(predict_version(stub, exported, "alexnet", version_label=label))
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # not yet loaded
        return False


def rpc_error(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code(), raised.value.details()


def test_two_models_with_their_version_policies(exported, versions, tmp_path):
    config = tmp_path / "models.config"
    config.write_text(config_text(
        model_entry("alexnet", versions / "alexnet", "latest { num_versions: 2 }"),
        model_entry("other", versions / "other")))
    with ModelServer(model_config_file=config, port=0, rest_api_port=free_port()) as server:
        assert states(server, "alexnet") == {3: AVAILABLE, 2: AVAILABLE}
        assert states(server, "other") == {1: AVAILABLE}
        image = next(iter(exported.images.values()))
        with Client(server.address, "alexnet", retries=0) as newest, \
                Client(server.address, "alexnet", version=2, retries=0) as older, \
                Client(server.address, "other", retries=0) as other:
            answers = [client.classify([image])[0] for client in (newest, older, other)]
        assert answers[0] == answers[1] == answers[2]  # the same weights in every version
        channel = grpc.insecure_channel(server.address)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert predict_version(stub, exported, "alexnet") == 3  # Latest: the newest loaded
        assert rpc_error(lambda: predict_version(stub, exported, "alexnet",
                                                 version={"value": 1})) == (
            grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(alexnet, 1)")
        channel.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{server.rest.port}/v1/models/other",
                                    timeout=30) as answer:
            assert json.loads(answer.read())["model_version_status"][0]["state"] == \
                "AVAILABLE"

        # Policies: all, then specific (a listed version not on disk is skipped).
        reload = server.core.reload_config
        reload(parse(config_text(model_entry("alexnet", versions / "alexnet", "all {}"))))
        assert states(server, "alexnet") == {3: AVAILABLE, 2: AVAILABLE, 1: AVAILABLE}
        assert states(server, "other") == {1: END}  # removed from the config: unloaded
        reload(parse(config_text(model_entry("alexnet", versions / "alexnet",
                                             "specific { versions: 1 versions: 7 }"))))
        assert states(server, "alexnet") == {3: END, 2: END, 1: AVAILABLE}


def test_a_label_moves_from_one_version_to_another_while_serving(exported, versions,
                                                                 tmp_path):
    config = tmp_path / "models.config"
    policy = "specific { versions: 1 versions: 2 }"
    config.write_text(config_text(model_entry("alexnet", versions / "alexnet", policy)))
    with ModelServer(model_config_file=config, port=0, file_system_poll_wait_seconds=POLL,
                     model_config_file_poll_wait_seconds=POLL) as server:
        # Labels may only name a version that serves: added once 1 and 2 are loaded.
        config.write_text(config_text(model_entry("alexnet", versions / "alexnet", policy,
                                                  {"stable": 1, "canary": 2})))
        channel = grpc.insecure_channel(server.address)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        wait_for(lambda: label_serves(stub, exported, "stable"), "the labels loaded")
        assert predict_version(stub, exported, "alexnet", version_label="stable") == 1
        assert predict_version(stub, exported, "alexnet", version_label="canary") == 2
        seen, failures, stop = [], [], threading.Event()

        def load():
            while not stop.is_set():
                try:
                    seen.append(predict_version(stub, exported, "alexnet",
                                                version_label="stable"))
                except grpc.RpcError as error:
                    failures.append(f"{error.code()}: {error.details()}")

        thread = threading.Thread(target=load)
        thread.start()
        try:
            wait_for(lambda: len(seen) > 3, "requests on stable")
            config.write_text(config_text(model_entry("alexnet", versions / "alexnet", policy,
                                                      {"stable": 2, "canary": 2})))
            wait_for(lambda: seen[-1:] == [2], "stable moved to version 2")
            count = len(seen)
            wait_for(lambda: len(seen) > count + 3, "requests on the moved label")
        finally:
            stop.set()
            thread.join()
        channel.close()
        assert not failures, failures[:3]
        moved = seen.index(2)
        assert set(seen[:moved]) == {1} and set(seen[moved:]) == {2}  # one switch, no flapping
        assert states(server, "alexnet") == {2: AVAILABLE, 1: AVAILABLE}


def test_labels_for_versions_that_do_not_serve(exported, versions, tmp_path):
    entry = model_entry("alexnet", versions / "alexnet", "specific { versions: 1 }",
                        {"stable": 1, "next": 2})
    config = tmp_path / "models.config"
    config.write_text(config_text(entry))
    # TF Serving checks labels before loading: on a first config, no version serves yet.
    # (Labels are checked in name order here: "next" first.)
    with pytest.raises(ValueError, match=r"Request to assign label to version 2 of model "
                                         r"alexnet, which is not currently available for "
                                         r"inference$"):
        ModelServer(model_config_file=config, port=0).start()
    with ModelServer(model_config_file=config, port=0,
                     allow_version_labels_for_unavailable_models=True) as server:
        channel = grpc.insecure_channel(server.address)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert predict_version(stub, exported, "alexnet", version_label="stable") == 1
        assert rpc_error(lambda: predict_version(stub, exported, "alexnet",
                                                 version_label="next")) == (
            grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(alexnet, 2)")
        assert rpc_error(lambda: predict_version(stub, exported, "alexnet",
                                                 version_label="nope")) == (
            grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: nope")
        # The flag allows a new label only: an existing one may not move to a version
        # that does not serve.
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        moved = parse(config_text(model_entry("alexnet", versions / "alexnet",
                                              "specific { versions: 1 }", {"stable": 3})))
        assert rpc_error(lambda: models.HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest(config=moved), timeout=60)) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "Request to assign label to version 3 of model alexnet, which is not currently "
            "available for inference")
        channel.close()


@pytest.mark.parametrize(("entries", "code", "message"), [
    (lambda v: [model_entry("a", v / "other"), model_entry("a", v / "alexnet")],
     grpc.StatusCode.INVALID_ARGUMENT, "Illegal to list model a multiple times in config list"),
    (lambda v: [model_entry("a", "relative/path")], grpc.StatusCode.INVALID_ARGUMENT,
     "Expected model a to have an absolute path or URI; got base_path()=relative/path"),
    (lambda v: [model_entry("a", v / "other", platform="")], grpc.StatusCode.INVALID_ARGUMENT,
     "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
     "ModelServerConfig::model_platform, model name is a"),
    (lambda v: [model_entry("a", v / "other", platform="tflite")],
     grpc.StatusCode.FAILED_PRECONDITION, "PlatformConfigMap has no entry for platform tflite"),
    (lambda v: [model_entry("alexnet", v / "other", platform="pytorch")],
     grpc.StatusCode.INVALID_ARGUMENT, "Illegal to change a model's platform. For model "
                                       "alexnet platform was tensorflow and new platform "
                                       "requested is pytorch"),
])
def test_reload_config_request_refuses_bad_configs(exported, versions, entries, code,
                                                   message):
    with ModelServer(versions / "alexnet", "alexnet", port=0) as server, \
            grpc.insecure_channel(server.address) as channel:
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        config = parse(config_text(*entries(versions)))
        assert rpc_error(lambda: models.HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest(config=config), timeout=60)) == (
            code, message)
        assert states(server, "alexnet") == {3: AVAILABLE}  # the old config still serves


def test_reload_config_request_adds_and_removes_models(exported, versions, tmp_path):
    with ModelServer(versions / "alexnet", "alexnet", port=0,
                     max_num_load_retries=0) as server, \
            grpc.insecure_channel(server.address) as channel:
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        config = parse(config_text(model_entry("other", versions / "other")))
        response = models.HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest(config=config), timeout=60)
        assert response.status.error_code == 0
        assert predict_version(stub, exported, "other") == 1  # loaded before the answer
        assert rpc_error(lambda: predict_version(stub, exported, "alexnet")) == (
            grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(alexnet)")
        assert states(server, "alexnet") == {3: END}
        # A new model whose version cannot load: UNKNOWN, naming it (WaitUntilModelsAvailable).
        broken = tmp_path / "broken"
        (broken / "4").mkdir(parents=True)
        (broken / "4" / "saved_model.pb").write_bytes(b"not a SavedModel")
        config = parse(config_text(model_entry("other", versions / "other"),
                                   model_entry("broken", broken)))
        code, message = rpc_error(lambda: models.HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest(config=config), timeout=60))
        assert code == grpc.StatusCode.UNKNOWN
        # "{" + each ServableId::DebugString() in braces + "}", as server_core.cc
        assert message.startswith("1 model(s) did not become available: "
                                  "{{{name: broken version: 4} due to error: ")
        assert message.endswith("}, }")
        assert predict_version(stub, exported, "other") == 1


@pytest.mark.slow
def test_the_cli_serves_a_config_file_and_logs_a_bad_one(exported, versions, tmp_path):
    config = tmp_path / "models.config"
    config.write_text(config_text(model_entry("alexnet", versions / "alexnet"),
                                  model_entry("other", versions / "other")))
    with ServerProcess(None, "ignored", f"--model_config_file={config}",
                       "--model_config_file_poll_wait_seconds=0.2") as process:
        image = next(iter(exported.images.values()))
        for name in ("alexnet", "other"):
            with Client(process.address, name, retries=0) as client:
                assert len(client.classify([image])[0]) == 5
        config.write_text("model_config_list { config { name: ")  # half written
        wait_for(lambda: any(line.startswith("Failed to read ModelServerConfig file: ")
                             for line in process.output), "the bad file logged", timeout=30)
        with Client(process.address, "other", retries=0) as client:
            assert len(client.classify([image])[0]) == 5  # the old config keeps serving
    assert process.process.returncode == 143, "\n".join(process.output)  # SIGTERM's
