"""Progress bars for the three tools: tqdm's bar on a terminal; on a file or a pipe (a
log, CI), a whole line every `LINE_INTERVAL` seconds instead of one line redrawn with
carriage returns that a log keeps every time.

Use `from tfrecords_tools.base.progress import tqdm` in place of tqdm's own: the same class,
arguments and `tqdm.write`.
"""

from __future__ import annotations

import sys

from tqdm import tqdm as _tqdm

#: Seconds at least between two lines when the output is not a terminal.
LINE_INTERVAL = 30.0


class tqdm(_tqdm):
    """tqdm, writing whole lines where its output is not a terminal."""

    def __init__(self, *args, **kwargs):
        stream = kwargs.get("file") or sys.stderr
        isatty = getattr(stream, "isatty", None)
        self._lines = not (isatty and isatty())
        if self._lines:
            kwargs["mininterval"] = max(kwargs.get("mininterval", 0.1), LINE_INTERVAL)
        super().__init__(*args, **kwargs)
        if self._lines and not self.disable:  # a disabled bar has no stream
            self.fp = _OwnLines(self.fp)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if not self._lines:
            return super().display(msg, pos)
        if msg == "":  # tqdm clearing a bar that does not stay (leave=False): nothing drawn
            return True
        stream = getattr(self.fp, "stream", self.fp)  # unwrapped while tqdm starts
        stream.write(f"{msg if msg is not None else self}\n")
        stream.flush()
        return True


class _OwnLines:
    """The stream of a bar writing lines: tqdm's own separators dropped (the newline
    after the last redraw, the carriage return after clearing), every line being whole
    already."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        if text.strip("\r\n"):
            self.stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)
