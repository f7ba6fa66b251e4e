"""Pretrained weights by name, as Keras applications take `weights="imagenet"`.

`resolve("bvlc_alexnet")` is a checkpoint of BVLC AlexNet (`keras_alexnet.bvlc`) with
the 1000 ILSVRC-2012 class names (`bvlc.SYNSET_WORDS`, shipped with the package):

- its `.caffemodel` is downloaded on first use from the URL BVLC publishes into Keras's
  cache, `$KERAS_HOME/models` (default `~/.keras/models`), with a progress bar, and
  checked against the sha1 BVLC publishes (a download that differs is deleted, and the
  error says so);
- it is imported once, into `bvlc_alexnet.keras` beside the download; later uses read
  that and download and import nothing.

`KERAS_ALEXNET_WEIGHTS_URL` serves mirrors and machines without internet: a URL to
download the file from instead (`http://mirror.example/caffe/`: its name is appended)
or a local directory holding it (read in place, checked all the same).  Offline with
nothing cached, the error names the URL, the cache path and the variable, after at
most `TIMEOUT_S` seconds.

`build_from_weights(weights="bvlc_alexnet")` and `import_weights("bvlc_alexnet", run)` take
the name as Keras applications and the `import-weights` command do.  A name we do not
know is refused naming the known ones (`PUBLISHED`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

from keras_alexnet import bvlc, checkpoints, model
from keras_alexnet.config import AlexNetConfig
from keras_alexnet.errors import AlexNetError
from keras_alexnet.network import AlexNet
from tfrecords_tools.base import storage
from tfrecords_tools.base.files import atomic_path
from tfrecords_tools.base.progress import tqdm

ENVIRONMENT_VARIABLE = "KERAS_ALEXNET_WEIGHTS_URL"
#: Seconds to wait for a connection, and then for each block of data: an offline
#: machine (or a dead mirror) is told so in seconds, not after the TCP timeout.
TIMEOUT_S = 10.0
_BLOCK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Published:
    """Weights as their authors publish them."""

    url: str
    sha1: str

    @property
    def filename(self) -> str:
        return self.url.rpartition("/")[2]


PUBLISHED = {
    # BVLC's model zoo (models/bvlc_alexnet/readme.md) gives the URL and this sha1.
    "bvlc_alexnet": Published("http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel",
                              "9116a64c0fbe4459d18f4bb6b56d647b63920377"),
}


def cache_dir() -> Path:
    """Keras's cache for weights: `$KERAS_HOME/models`, else `~/.keras/models`."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models"


def _unknown(name: str) -> AlexNetError:
    return AlexNetError(f"{name}: no such checkpoint or run directory, and not weights we "
                        f"know by name (known: {', '.join(sorted(PUBLISHED))})")


def _is_published(value: str | os.PathLike) -> bool:
    """Whether `value` names published weights.  A bare word (no directory, no suffix)
    that is not a path here must: it is refused naming the known ones."""
    if not isinstance(value, str):
        return False
    if value in PUBLISHED:
        return True
    if len(Path(value).parts) == 1 and not Path(value).suffix and not Path(value).exists():
        raise _unknown(value)
    return False


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_file(name: str) -> Path:
    """The published file of `name`, its sha1 checked: the mirror directory's, the
    cached download, or downloaded now into the cache."""
    if name not in PUBLISHED:
        raise _unknown(name)
    published = PUBLISHED[name]
    mirror = os.environ.get(ENVIRONMENT_VARIABLE, "")
    if mirror and "://" not in mirror:
        local = Path(mirror) / published.filename
        if not local.is_file():
            raise AlexNetError(f"{ENVIRONMENT_VARIABLE}={mirror}: no {published.filename} "
                               f"there")
        found = _sha1(local)
        if found != published.sha1:
            raise AlexNetError(f"{local}: sha1 {found}, expected {published.sha1} "
                               f"(the published file's); not BVLC's file, or damaged")
        return local
    cached = cache_dir() / published.filename
    if cached.is_file():
        if _sha1(cached) == published.sha1:
            return cached
        print(f"{cached}: sha1 differs from the published {published.sha1}; deleted, "
              f"downloading it again", file=sys.stderr)
        cached.unlink()
    url = f"{mirror.rstrip('/')}/{published.filename}" if mirror else published.url
    _download(url, cached, published)
    return cached


def _download(url: str, target: Path, published: Published) -> None:
    """`url` into `target`, whole and with the published sha1, or not at all."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        response = urllib.request.urlopen(url, timeout=TIMEOUT_S)
    except OSError as error:  # URLError, HTTPError, a timeout, a refused connection
        raise AlexNetError(
            f"cannot download {url} ({getattr(error, 'reason', error)}) and there is no "
            f"copy at {target}; put {published.filename} there, or set "
            f"{ENVIRONMENT_VARIABLE} to a mirror URL or a directory holding it") from error
    length = response.headers.get("Content-Length")
    total = int(length) if length else None
    digest, received = hashlib.sha1(), 0
    with response, atomic_path(target) as partial, open(partial, "wb") as file, \
            tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                 desc=f"downloading {published.filename}") as bar:
        try:
            while block := response.read(_BLOCK):
                file.write(block)
                digest.update(block)
                received += len(block)
                bar.update(len(block))
        except (OSError, http.client.HTTPException) as error:
            # A reset or stalled connection; a short chunked body (IncompleteRead).
            raise AlexNetError(f"the download of {url} was interrupted after {received:,} "
                               f"bytes ({error}); nothing was kept, run again") from error
        if total is not None and received != total:
            # urllib returns a connection closed early as the end of the body.
            raise AlexNetError(f"the download of {url} was interrupted after {received:,} "
                               f"of {total:,} bytes; nothing was kept, run again")
        if digest.hexdigest() != published.sha1:
            raise AlexNetError(f"{url}: sha1 {digest.hexdigest()}, expected "
                               f"{published.sha1} (the published file's); the download "
                               f"was deleted")


def _imported(name: str) -> Path:
    """`name`'s checkpoint in the cache, imported from its file on first use."""
    cached = cache_dir() / f"{name}.keras"
    if cached.is_file():
        return cached
    source = weights_file(name)
    cached.parent.mkdir(parents=True, exist_ok=True)
    # Imported into a run directory of its own beside the cache, then written whole or
    # not at all, whoever else imports it at the same time.
    with tempfile.TemporaryDirectory(dir=cached.parent, prefix=f".{name}-") as run, \
            atomic_path(cached) as partial:
        os.replace(bvlc.import_weights(source, run, labels=bvlc.SYNSET_WORDS), partial)
    return cached


def resolve(name_or_path: str | os.PathLike) -> storage.PathOrUrl:
    """A checkpoint: for a name in `PUBLISHED` its cached import (downloaded and
    imported on first use); otherwise the path as given (a `.keras` file or a run
    directory).  A bare word that is neither is refused, naming the known names."""
    if _is_published(name_or_path):
        return _imported(str(name_or_path))
    return storage.path(name_or_path)


def import_weights(name_or_path: str | os.PathLike, model_dir: str | Path, *,
                   labels: str | Path | None = None,
                   mean_image: str | Path | None = None) -> Path:
    """`bvlc.import_weights` that also takes a name in `PUBLISHED`: then the classes
    default to ILSVRC-2012's, and without `labels` and `mean_image` the cached import
    is copied into `model_dir`."""
    if not _is_published(name_or_path):
        return bvlc.import_weights(name_or_path, model_dir, labels=labels,
                                   mean_image=mean_image)
    if labels is None and mean_image is None:
        target = bvlc.new_checkpoint_path(model_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as partial:
            shutil.copyfile(_imported(name_or_path), partial)
        return target
    return bvlc.import_weights(weights_file(name_or_path), model_dir,
                               labels=labels or bvlc.SYNSET_WORDS, mean_image=mean_image)


def build_from_weights(config: AlexNetConfig | None = None, *,
                weights: str | os.PathLike | None = None, **kwargs) -> AlexNet:
    """`keras_alexnet.model.build_network`, `weights` also a name in `PUBLISHED`; with
    `weights`, `config` defaults to theirs (`bvlc.bvlc_config()` for BVLC's)."""
    if weights is not None and _is_published(weights):
        weights = _imported(str(weights))
        config = config or bvlc.bvlc_config()
    elif weights is not None and config is None:
        config = model.config_of(checkpoints.load_model(weights, compile=False))
    return model.build_network(config, weights=weights, **kwargs)
