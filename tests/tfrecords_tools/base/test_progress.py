"""tfrecords_tools.base.progress: a bar on a terminal, whole lines in a log."""

import io

from tfrecords_tools.base import progress
from tfrecords_tools.base.progress import tqdm


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_whole_lines_and_no_carriage_returns(monkeypatch):
    clock = iter(range(0, 10_000, 7))  # seconds: 7 a call, a line at least every 30
    monkeypatch.setattr("tqdm.std.time", lambda: next(clock))  # tqdm's clock
    log = io.StringIO()
    with tqdm(total=100, desc="converting", unit="img", file=log) as bar:
        for _ in range(100):
            bar.update()
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert lines[-1].startswith("converting: 100%") and "100/100" in lines[-1]
    assert 3 <= len(lines) <= 100 * 7 // progress.LINE_INTERVAL + 2  # periodic, not per step


def test_a_bar_that_does_not_stay_leaves_no_line_in_a_log():
    log = io.StringIO()
    with tqdm(total=3, desc="counting", file=log, leave=False) as bar:
        bar.update(3)
    assert log.getvalue().count("\n") == 1  # the start, and no end line


def test_a_terminal_gets_tqdms_redrawn_bar():
    terminal = Terminal()
    with tqdm(total=3, desc="stats", file=terminal, mininterval=0) as bar:
        bar.update(3)
    assert "\r" in terminal.getvalue()


def test_a_disabled_bar_writes_nothing():
    log = io.StringIO()
    with tqdm(total=3, file=log, disable=True) as bar:
        bar.update(3)
    assert log.getvalue() == ""

