"""The models a server serves, their version policies and labels: TF Serving's ServerCore.

`--model_config_file` holds a `tensorflow.serving.ModelServerConfig` text proto:

    model_config_list {
      config {
        name: "alexnet"  base_path: "/models/alexnet"  model_platform: "tensorflow"
        model_version_policy { specific { versions: 1 versions: 2 } }
        version_labels { key: "stable" value: 1 }
        version_labels { key: "canary" value: 2 }
      }
    }

Without it, `--model_name` and `--model_base_path` make a one-model config, as
tensorflow_model_server's `BuildSingleModelConfig`.  A new config (the file polled every
`--model_config_file_poll_wait_seconds`, or `HandleReloadConfigRequest`) adds, updates
and removes models while the others keep serving.  Checks and messages follow
model_servers/server_core.cc.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from tensorflow_serving.apis import get_model_status_pb2, model_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.config_files import read_text_proto
from serving.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ServingError,
)
from serving.options import ServerOptions
from serving.servables import (
    Servable,
    ServableManager,
    describe_request,
    version_statuses,
)
from tfrecords_tools.base import storage

ModelServerConfig = model_server_config_pb2.ModelServerConfig
PLATFORM = "tensorflow"  # kTensorFlowModelPlatform, the only platform served here


def single_model_config(model_name: str, model_base_path: str | os.PathLike
                        ) -> model_server_config_pb2.ModelServerConfig:
    """server.cc's `BuildSingleModelConfig` (a local base path made absolute, which
    tensorflow_model_server requires of it; a URL such as `gs://bucket/models/alexnet`
    as given)."""
    base_path = (str(model_base_path) if storage.is_url(str(model_base_path))
                 else str(Path(model_base_path).absolute()))
    config = ModelServerConfig()
    config.model_config_list.config.add(name=model_name, base_path=base_path,
                                        model_platform=PLATFORM)
    return config


def read_model_config(path: str | os.PathLike) -> model_server_config_pb2.ModelServerConfig:
    return read_text_proto(path, ModelServerConfig)


def _validate(new: model_server_config_pb2.ModelConfigList,
              old: model_server_config_pb2.ModelConfigList) -> None:
    """server_core.cc's ValidateModelConfigList, ValidateNoModelsChangePlatforms and
    GetPlatform, in that order."""
    names = set()
    for model in new.config:
        if model.name in names:
            raise InvalidArgumentError(f"Illegal to list model {model.name} multiple times "
                                       f"in config list")
        names.add(model.name)
    for model in new.config:
        if not (storage.is_url(model.base_path) or Path(model.base_path).is_absolute()):
            raise InvalidArgumentError(f"Expected model {model.name} to have an absolute "
                                       f"path or URI; got base_path()={model.base_path}")
    old_platforms = {model.name: model.model_platform for model in old.config}
    for model in new.config:
        if not model.model_platform:
            raise InvalidArgumentError(
                f"Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                f"ModelServerConfig::model_platform, model name is {model.name}")
        was = old_platforms.get(model.name, model.model_platform)
        if was != model.model_platform:
            raise InvalidArgumentError(
                f"Illegal to change a model's platform. For model {model.name} platform was "
                f"{was} and new platform requested is {model.model_platform}")
        if model.model_platform != PLATFORM:
            raise FailedPreconditionError(f"PlatformConfigMap has no entry for platform "
                                          f"{model.model_platform}")


class ServerCore:
    """Serves the models of a `ModelServerConfig`; `get` and `status` answer requests.

    Of its `ServerOptions`: version directories are polled every
    `file_system_poll_wait_seconds` (0: only when a config is loaded); a version that
    fails to load is retried as `max_num_load_retries` and `load_retry_interval_micros`
    say.  A version label
    may name only a version that serves, unless
    `allow_version_labels_for_unavailable_models` (and then only a label not already
    pointing elsewhere).
    """

    def __init__(self, options: ServerOptions, log=None):
        self.poll_wait_seconds = options.file_system_poll_wait_seconds
        self._retries = dict(max_num_load_retries=options.max_num_load_retries,
                             load_retry_interval=options.load_retry_interval_micros / 1e6)
        self._allow_unavailable_labels = options.allow_version_labels_for_unavailable_models
        self._log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self._config = ModelServerConfig()
        self._config_lock = threading.Lock()  # one reload at a time
        # Every model ever configured (a removed one keeps its END states for
        # GetModelStatus, as TF Serving's state monitor); replaced whole, never mutated.
        self._managers: dict[str, ServableManager] = {}
        self._configured: frozenset[str] = frozenset()
        self._labels: dict[str, dict[str, int]] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def model_names(self) -> list[str]:
        """The models of the current config, in its order."""
        return [model.name for model in self._config.model_config_list.config]

    def reload_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """server_core.cc's `ReloadConfig`: checks the config, moves the labels, adds and
        updates models (loading new models' versions before returning) and unloads the
        models it no longer lists.  Raises `ServingError` with TF Serving's message; a
        new model whose versions all fail to load is one (at start-up too, where
        tensorflow_model_server then exits)."""
        with self._config_lock:
            old = self._config
            first = old.WhichOneof("config") is None
            kind = config.WhichOneof("config")
            if not (first or old == config
                    or (old.WhichOneof("config") == kind == "model_config_list")):
                raise FailedPreconditionError(
                    "Cannot transition to requested config. It is only legal to transition "
                    "from one ModelConfigList to another.")
            if kind is None:
                self._log("Taking no action for empty config.")
                return
            if kind != "model_config_list":
                raise InvalidArgumentError("Missing custom_model_config_loader in ServerCore "
                                           "Options")
            _validate(config.model_config_list, old.model_config_list)
            labels = self._label_map(config.model_config_list)
            managers, added = dict(self._managers), []
            for model in config.model_config_list.config:
                manager = managers.get(model.name)
                if manager is None:
                    manager = managers[model.name] = ServableManager(
                        model.name, model.base_path, model.model_version_policy, self._log,
                        **self._retries)
                else:
                    manager.configure(model.base_path, model.model_version_policy)
                if model.name not in self._configured:
                    added.append(manager)
            configured = frozenset(model.name for model in config.model_config_list.config)
            self._managers, self._labels = managers, labels
            self._configured, self._config = configured, config
            for name in sorted(set(managers) - configured):
                managers[name].unload_all("its model was removed from the config")
            for name in configured:
                managers[name].poll()
            # At start-up TF Serving waits in load_servables_fast.cc, later in
            # server_core.cc: the same check, two wordings.
            self._await(added, "servable(s)" if first else "model(s)")

    def _label_map(self, config_list: model_server_config_pb2.ModelConfigList
                   ) -> dict[str, dict[str, int]]:
        """server_core.cc's `UpdateModelVersionLabelMap`: labels must name versions that
        serve now (before the config's new versions load)."""
        labels: dict[str, dict[str, int]] = {}
        for model in config_list.config:
            manager = self._managers.get(model.name)
            for label, version in sorted(model.version_labels.items()):
                existing = self._labels.get(model.name, {}).get(label, version)
                allowed = self._allow_unavailable_labels and existing == version
                if not allowed and (manager is None or manager.servable(version) is None):
                    raise FailedPreconditionError(
                        f"Request to assign label to version {version} of model "
                        f"{model.name}, which is not currently available for inference")
                labels.setdefault(model.name, {})[label] = version
        return labels

    def _await(self, added: list[ServableManager], noun: str) -> None:
        """`WaitUntilModelsAvailable` for the models a config added: those with versions
        on disk must have one serving (a model without any yet is polled for it)."""
        failed = []
        for manager in added:
            if manager.servable() is not None or not manager.aspired():
                continue  # serving, or nothing there yet (polled until it appears)
            version = manager.aspired()[-1]
            error = manager.load_error(version)
            failed.append(f"{{name: {manager.model_name} version: {version}}}"
                          + (f" due to error: {error}" if error else ""))
        if failed:  # UNKNOWN, ServingError's code
            raise ServingError(f"{len(failed)} {noun} did not become available: "
                               f"{{{''.join(f'{{{entry}}}, ' for entry in failed)}}}")

    def get(self, model_spec: model_pb2.ModelSpec) -> Servable:
        """The servable a request's `model_spec` names, with TF Serving's errors
        (server_core.cc's `ServableRequestFromModelSpec`)."""
        name = model_spec.name
        if not name:
            raise InvalidArgumentError("ModelSpec has no name specified.")
        choice, version = model_spec.WhichOneof("version_choice"), None
        if choice == "version":
            version = model_spec.version.value
        elif choice == "version_label":
            version = self._labels.get(name, {}).get(model_spec.version_label)
            if version is None:
                raise InvalidArgumentError(f"Unrecognized servable version label: "
                                           f"{model_spec.version_label}")
        manager = self._managers.get(name) if name in self._configured else None
        servable = manager.servable(version) if manager is not None else None
        if servable is None:
            raise NotFoundError(f"Servable not found for request: "
                                f"{describe_request(name, version)}")
        return servable

    def status(self, model_spec: model_pb2.ModelSpec
               ) -> list[get_model_status_pb2.ModelVersionStatus]:
        """`GetModelStatus` (get_model_status_impl.cc): a label is not resolved."""
        manager = self._managers.get(model_spec.name)
        version = model_spec.version.value if model_spec.HasField("version") else None
        if manager is None:  # a model never configured: no states
            return version_statuses(model_spec.name, {}, version)
        return manager.status(version)

    def poll_versions(self) -> None:
        """One look at every configured model's base path."""
        for name in self._configured:
            self._managers[name].poll()

    def start_polling(self, config_file: str | os.PathLike | None = None,
                      config_file_poll_wait_seconds: float = 0) -> None:
        """Polls the base paths, and the config file when a wait is given (server.cc's
        `PollFilesystemAndReloadConfig`: a bad file is logged and the old config kept)."""
        if self.poll_wait_seconds > 0:
            self._every(self.poll_wait_seconds, self.poll_versions, "version-poller")
        if config_file and config_file_poll_wait_seconds > 0:
            self._every(config_file_poll_wait_seconds,
                        lambda: self._reload_file(config_file), "config-poller")

    def _reload_file(self, path: str | os.PathLike) -> None:
        try:
            config = read_model_config(path)
        except ValueError as error:
            self._log(f"Failed to read ModelServerConfig file: {error}")
            return
        try:
            self.reload_config(config)
        except ServingError as error:
            self._log(f"PollFilesystemAndReloadConfig failed to ReloadConfig: "
                      f"{error.message}")

    def _every(self, seconds: float, work, name: str) -> None:
        def loop():
            while not self._stop.wait(seconds):
                try:
                    work()
                except Exception as error:  # the poller must outlive one bad directory
                    self._log(f"{name}: {error}")

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
