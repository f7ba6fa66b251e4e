"""keras_alexnet.pretrained: weights by name, downloaded from a real HTTP server on the
loopback interface (never the internet), checked, cached and imported once; and the
ILSVRC-2012 classes shipped with the package, checked against Keras's own list."""

from __future__ import annotations

import hashlib
import inspect
import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from keras_alexnet import bvlc, checkpoints, pretrained
from keras_alexnet.commands import main
from keras_alexnet.pretrained import ENVIRONMENT_VARIABLE, Published
from tests.keras_alexnet.bvlc_files import random_weights, write_caffemodel
from tests.keras_alexnet.loopback import LoopbackServer

#: Keras's `imagenet_class_index.json` ({"0": ["n01440764", "tench"], ...}), which
#: `keras.applications.imagenet_utils.decode_predictions` downloads and checks by md5.
KERAS_CLASS_INDEX = Path(__file__).with_name("keras_imagenet_class_index.json")

PAYLOAD = np.random.default_rng(0).bytes(3 << 20)  # three blocks of the download loop


@pytest.fixture
def keras_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv(ENVIRONMENT_VARIABLE, raising=False)
    return tmp_path / "keras" / "models"


@pytest.fixture
def server():
    server = LoopbackServer({"/weights/test.caffemodel": PAYLOAD})
    yield server
    server.stop()


def publish(monkeypatch, url: str, content: bytes = PAYLOAD, name: str = "test") -> None:
    monkeypatch.setitem(pretrained.PUBLISHED, name,
                        Published(url, hashlib.sha1(content).hexdigest()))


def test_a_download_is_checked_cached_and_used_with_the_network_gone(keras_home, server,
                                                                     monkeypatch, capsys):
    publish(monkeypatch, server.url("/weights/test.caffemodel"))
    path = pretrained.weights_file("test")
    assert path == keras_home / "test.caffemodel"
    assert path.read_bytes() == PAYLOAD
    assert "downloading test.caffemodel" in capsys.readouterr().err  # the progress bar
    assert server.requests == ["/weights/test.caffemodel"]
    server.stop()
    assert pretrained.weights_file("test") == path  # the cache: no connection tried


def test_a_checksum_mismatch_deletes_the_download_and_says_so(keras_home, server,
                                                              monkeypatch):
    publish(monkeypatch, server.url("/weights/test.caffemodel"), content=b"another file")
    with pytest.raises(ValueError, match=r"test.caffemodel: sha1 [0-9a-f]{40}, expected "
                                         r"[0-9a-f]{40} \(the published file's\); the "
                                         r"download was deleted"):
        pretrained.weights_file("test")
    assert list(keras_home.iterdir()) == []  # no file, no partial one


def test_an_interrupted_transfer_keeps_nothing_and_the_next_try_downloads_again(
        keras_home, server, monkeypatch):
    publish(monkeypatch, server.url("/weights/test.caffemodel"))
    server.cut_after = 1_500_000
    with pytest.raises(ValueError, match=r"interrupted after 1,500,000 of 3,145,728 bytes; "
                                         r"nothing was kept, run again"):
        pretrained.weights_file("test")
    assert list(keras_home.iterdir()) == []
    server.cut_after = None
    assert pretrained.weights_file("test").read_bytes() == PAYLOAD


def test_a_cached_copy_that_differs_is_downloaded_again(keras_home, server, monkeypatch,
                                                        capsys):
    publish(monkeypatch, server.url("/weights/test.caffemodel"))
    keras_home.mkdir(parents=True)
    (keras_home / "test.caffemodel").write_bytes(PAYLOAD[:1000])  # an old partial copy
    assert pretrained.weights_file("test").read_bytes() == PAYLOAD
    assert "sha1 differs from the published" in capsys.readouterr().err


def test_offline_without_a_cached_copy_is_one_line_within_seconds(keras_home, server,
                                                                  monkeypatch):
    url = server.url("/weights/test.caffemodel")
    publish(monkeypatch, url)
    server.stop()  # the port now refuses connections
    started = time.monotonic()
    with pytest.raises(ValueError) as refused:
        pretrained.weights_file("test")
    message = str(refused.value)
    assert "\n" not in message
    for part in (url, str(keras_home / "test.caffemodel"), ENVIRONMENT_VARIABLE):
        assert part in message
    assert time.monotonic() - started < 5

    # A host that accepts the connection and never answers: the timeout, not TCP's.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        publish(monkeypatch, f"http://127.0.0.1:{silent.getsockname()[1]}/test.caffemodel")
        monkeypatch.setattr(pretrained, "TIMEOUT_S", 0.5)
        started = time.monotonic()
        with pytest.raises(ValueError, match=f"cannot download .* {ENVIRONMENT_VARIABLE}"):
            pretrained.weights_file("test")
        assert time.monotonic() - started < 3


def test_the_variable_names_a_mirror_url_or_a_directory(keras_home, server, monkeypatch,
                                                        tmp_path):
    publish(monkeypatch, "http://published.invalid/models/test.caffemodel")
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, server.url("/weights/"))
    assert pretrained.weights_file("test").read_bytes() == PAYLOAD
    assert server.requests == ["/weights/test.caffemodel"]

    directory = tmp_path / "mirror"
    directory.mkdir()
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, str(directory))
    with pytest.raises(ValueError, match=f"{ENVIRONMENT_VARIABLE}={directory}: no "
                                         f"test.caffemodel there"):
        pretrained.weights_file("test")
    (directory / "test.caffemodel").write_bytes(PAYLOAD)
    assert pretrained.weights_file("test") == directory / "test.caffemodel"  # in place
    (directory / "test.caffemodel").write_bytes(b"damaged")
    with pytest.raises(ValueError, match="not BVLC's file, or damaged"):
        pretrained.weights_file("test")
    assert (directory / "test.caffemodel").exists()  # the user's file is left alone
    assert server.requests == ["/weights/test.caffemodel"]


def test_a_name_we_do_not_know_is_refused_naming_the_known_ones(keras_home, tmp_path,
                                                                capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"^alexnet_v9: no such checkpoint or run "
                                         r"directory, and not weights we know by name "
                                         r"\(known: bvlc_alexnet\)$"):
        pretrained.resolve("alexnet_v9")
    assert main(["import-weights", "alexnet_v9", str(tmp_path / "run")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "known: bvlc_alexnet" in error
    assert not (tmp_path / "run").exists()
    # Paths are left to the caller: a run directory here, a file anywhere.
    (tmp_path / "alexnet_v9").mkdir()
    assert pretrained.resolve("alexnet_v9") == Path("alexnet_v9")
    assert pretrained.resolve(tmp_path / "x.keras") == tmp_path / "x.keras"
    assert not keras_home.exists()  # nothing was downloaded


def test_the_shipped_classes_are_keras_imagenet_class_index():
    keras_index = KERAS_CLASS_INDEX.read_bytes()
    # The file Keras checks by this md5 in decode_predictions: the second source is
    # Keras's own, not a copy of ours.
    from keras.src.applications import imagenet_utils

    digest = hashlib.md5(keras_index).hexdigest()
    assert digest in inspect.getsource(imagenet_utils.decode_predictions)
    theirs = [tuple(pair) for _, pair in sorted(json.loads(keras_index).items(),
                                                key=lambda item: int(item[0]))]
    ours = bvlc.read_classes(bvlc.SYNSET_WORDS, 1000)
    assert [wnid for wnid, _ in ours] == [wnid for wnid, _ in theirs]
    assert [wnid for wnid, _ in ours] == sorted(wnid for wnid, _ in ours)  # label order
    # Keras names a class by its first synonym, with underscores for spaces.
    assert [name.split(", ")[0].replace(" ", "_") for _, name in ours] == \
        [name for _, name in theirs]
    assert ours[0] == ("n01440764", "tench, Tinca tinca")


@pytest.mark.slow  # a 244 MB file of the real structure, imported once
def test_bvlc_alexnet_by_name_is_downloaded_and_imported_once(keras_home, tmp_path,
                                                              monkeypatch, capsys):
    weights = random_weights()
    content = write_caffemodel(tmp_path / "bvlc_alexnet.caffemodel", weights).read_bytes()
    server = LoopbackServer({"/bvlc_alexnet.caffemodel": content})
    try:
        publish(monkeypatch, server.url("/bvlc_alexnet.caffemodel"), content,
                name="bvlc_alexnet")
        assert main(["import-weights", "bvlc_alexnet", str(tmp_path / "first")]) == 0
    finally:
        server.stop()
    assert sorted(p.name for p in keras_home.iterdir()) == ["bvlc_alexnet.caffemodel",
                                                             "bvlc_alexnet.keras"]
    target = checkpoints.checkpoint_path(tmp_path / "first", 0)
    assert capsys.readouterr().out.strip() == str(target)
    model = checkpoints.load_model(target, compile=False)
    assert model.input_contract.classes == bvlc.read_classes(bvlc.SYNSET_WORDS, 1000)
    np.testing.assert_array_equal(model.get_layer("tower_b_fc8").layer.bias.numpy(),
                                  weights["fc8"][1][500:])

    # The network gone, the importer broken: the cached import serves every later use.
    def no_import(*args, **kwargs):
        raise AssertionError("imported again")

    monkeypatch.setattr(bvlc, "import_weights", no_import)
    assert pretrained.resolve("bvlc_alexnet") == keras_home / "bvlc_alexnet.keras"
    assert main(["import-weights", "bvlc_alexnet", str(tmp_path / "second")]) == 0
    second = checkpoints.checkpoint_path(tmp_path / "second", 0)
    assert second.read_bytes() == (keras_home / "bvlc_alexnet.keras").read_bytes()
    assert main(["import-weights", "bvlc_alexnet", str(tmp_path / "second")]) == 1
    assert "epoch-0000.keras already exists" in capsys.readouterr().err

    # As Keras applications take weights="imagenet"; the config is BVLC's geometry.
    built = pretrained.build_from_weights(weights="bvlc_alexnet")
    assert built.input_shape == (None, 227, 227, 3)
    np.testing.assert_array_equal(built.get_layer("tower_a_conv1").layer.kernel.numpy(),
                                  model.get_layer("tower_a_conv1").layer.kernel.numpy())
    assert built.input_contract.classes == model.input_contract.classes
    with pytest.raises(ValueError, match="the checkpoint has classes 1000 but the "
                                         "config gives 10"):
        pretrained.build_from_weights(weights="bvlc_alexnet", num_classes=10)
