"""A local path or a `tf.io.gfile` URL (`gs://bucket/run`, `s3://...`, `ram://...`): one
value for the code that reads shard directories and writes model directories and exports.

`path(value)` is a `pathlib.Path` for a local path, so local files take the code paths
they always took, and a `Url` for a URL: the few `Path` methods that code uses (`/`,
`name`, `parent`, `exists`, `is_dir`, `iterdir`, `glob`, `open`, `read_text`, `mkdir`,
`unlink`, ...), through `tf.io.gfile`, with its errors turned into the `OSError`s that
`Path` raises.  TensorFlow is imported only when a URL is used: the converter's worker
processes import this module and never see one.

A scheme TensorFlow has no file system for here (`s3://` without tensorflow-io) is an
`ArgumentError` naming the scheme and the package that provides it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import os
import posixpath
import re
import types
from collections.abc import Iterator
from pathlib import Path, PurePath

from tfrecords_tools.base.errors import ArgumentError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
#: Schemes TensorFlow's own wheel has no file system for, and the package that registers
#: one when imported (tensorflow-io's plugins; `gs` and `ram` are built in).
PROVIDERS = {scheme: "tensorflow-io"
             for scheme in ("s3", "hdfs", "viewfs", "har", "az", "http", "https")}


def is_url(value: object) -> bool:
    """Whether `value` is a URL (`scheme://...`) rather than a local path."""
    return isinstance(value, Url) or (isinstance(value, str) and bool(_SCHEME.match(value)))


def path(value: str | os.PathLike) -> Path | Url:
    """`value` as a `Url` when it is one, else as a `pathlib.Path`."""
    if isinstance(value, (Path, Url)):
        return value
    return Url(value) if is_url(value) else Path(value)


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def check_scheme(url: str) -> None:
    """An `ArgumentError` naming the scheme and its package when TensorFlow cannot open
    `url` here."""
    scheme = _SCHEME.match(url).group(1).lower()
    if scheme in _gfile().get_registered_schemes():
        return
    package = PROVIDERS.get(scheme)
    if package:
        with contextlib.suppress(ImportError):
            importlib.import_module(package.replace("-", "_"))  # registers its file systems
        if scheme in _gfile().get_registered_schemes():
            return
    hint = (f"install {package} (pip install {package}), which provides it" if package else
            "TensorFlow knows of no package that provides it; use a local path, gs:// or "
            "a mounted file system")
    raise ArgumentError(f"{url}: TensorFlow has no file system for {scheme}:// URLs here; "
                        f"{hint}")


@contextlib.contextmanager
def _os_errors(url: str) -> Iterator[None]:
    """TensorFlow's errors as the `OSError`s `pathlib` raises, so callers catch one kind."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.NotFoundError as error:
        raise FileNotFoundError(f"{url}: no such file or directory") from error
    except tf.errors.PermissionDeniedError as error:
        raise PermissionError(f"{url}: permission denied ({error.message})") from error
    except tf.errors.OpError as error:
        raise OSError(f"{url}: {error.message}") from error


class Url:
    """A file or directory at a `tf.io.gfile` URL, with the `Path` methods used here."""

    def __init__(self, url: str | Url):
        url = str(url)
        check_scheme(url)
        head = _SCHEME.match(url).group(0)
        self._url = head + url[len(head):].rstrip("/")

    # --- naming -------------------------------------------------------------------------

    def __str__(self) -> str:
        return self._url

    def __repr__(self) -> str:
        return f"Url({self._url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Url) and other._url == self._url

    def __hash__(self) -> int:
        return hash(self._url)

    def __lt__(self, other: Url) -> bool:
        return self._url < other._url

    def __truediv__(self, other: str | PurePath) -> Url:
        return Url(f"{self._url}/{PurePath(other).as_posix()}")

    @property
    def name(self) -> str:
        return posixpath.basename(self._url[len(_SCHEME.match(self._url).group(0)):])

    @property
    def parent(self) -> Url:
        head = _SCHEME.match(self._url).group(0)
        return Url(head + posixpath.dirname(self._url[len(head):]))

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    def with_name(self, name: str) -> Url:
        return self.parent / name

    def match(self, pattern: str) -> bool:
        """Whether the name matches a one-component `pattern` (as `Path.match`)."""
        return fnmatch.fnmatchcase(self.name, pattern)

    # --- looking ------------------------------------------------------------------------

    def exists(self) -> bool:
        with _os_errors(self._url):
            return _gfile().exists(self._url)

    def is_dir(self) -> bool:
        with _os_errors(self._url):
            return _gfile().isdir(self._url)

    def is_file(self) -> bool:
        return self.exists() and not self.is_dir()

    def iterdir(self) -> Iterator[Url]:
        with _os_errors(self._url):
            names = _gfile().listdir(self._url)
        # Object stores list a "directory" with a trailing slash.
        return (self / name.rstrip("/") for name in names)

    def glob(self, pattern: str) -> list[Url]:
        with _os_errors(self._url):
            return [Url(found) for found in _gfile().glob(str(self / pattern))]

    def stat(self) -> types.SimpleNamespace:
        """`st_size` and `st_mtime_ns`, the fields of `os.stat_result` used here."""
        with _os_errors(self._url):
            stat = _gfile().stat(self._url)
        return types.SimpleNamespace(st_size=stat.length, st_mtime_ns=stat.mtime_nsec)

    # --- reading and writing ------------------------------------------------------------

    def open(self, mode: str = "r", **_text_options):
        """A `tf.io.gfile.GFile`: text modes read and write UTF-8 and pass line endings
        through unchanged, whatever `encoding` and `newline` say."""
        return _gfile().GFile(self._url, mode)

    def read_bytes(self) -> bytes:
        with _os_errors(self._url), self.open("rb") as file:
            return file.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        self.unlink(missing_ok=True)  # see `upload`
        with _os_errors(self._url), self.open("wb") as file:
            file.write(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        """Makes the directory and its parents (an object store has no directories: then
        nothing is written)."""
        with _os_errors(self._url):
            _gfile().makedirs(self._url)

    def unlink(self, missing_ok: bool = False) -> None:
        with contextlib.suppress(FileNotFoundError) if missing_ok else contextlib.nullcontext(), \
                _os_errors(self._url):
            _gfile().remove(self._url)

    def replace(self, target: Url) -> Url:
        with _os_errors(self._url):
            _gfile().rename(self._url, str(target), overwrite=True)
        return target

    def rmtree(self) -> None:
        with _os_errors(self._url):
            _gfile().rmtree(self._url)


def upload(source: str | os.PathLike, target: Url) -> None:
    """Copies a local file to `target`."""
    # Removed first: TensorFlow's ram:// file system appends to a file that exists
    # rather than replacing it.
    target.unlink(missing_ok=True)
    with _os_errors(str(target)):
        _gfile().copy(os.fspath(source), str(target), overwrite=True)


def upload_tree(source: Path, target: Url, last: tuple[str, ...] = ()) -> None:
    """Copies a local directory's files under `target`; the files named in `last`
    (relative paths) are copied after all the others."""
    files = sorted(file for file in source.rglob("*") if file.is_file())
    files.sort(key=lambda file: file.relative_to(source).as_posix() in last)
    for file in files:
        relative = file.relative_to(source)
        (target / relative).parent.mkdir()
        upload(file, target / relative)


#: What `path` gives.
PathOrUrl = Path | Url
