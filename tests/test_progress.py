"""Progress: bars on a terminal, one line per stage elsewhere or with --quiet."""

import io
import re

import pytest
from rich.console import Console
from rich.progress import Progress

from oodseg.progress import StageLines, stage, stages, track


def console(terminal: bool) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=terminal, width=120), buffer


def test_a_terminal_gets_bars_and_quiet_or_a_file_gets_lines():
    assert isinstance(stages(console(True)[0]), Progress)
    assert isinstance(stages(console(True)[0], quiet=True), StageLines)
    assert isinstance(stages(console(False)[0]), StageLines)


def test_one_line_per_stage_with_its_count():
    out, buffer = console(False)
    with stages(out) as progress:
        assert list(track(range(4), progress, "scoring")) == [0, 1, 2, 3]
        with stage(progress, "training"):
            pass
        items = iter("abc")  # no length: the count has no total
        assert list(track(items, progress, "reading", total=3)) == ["a", "b", "c"]
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 3
    assert re.fullmatch(r"scoring: 4/4 in \d+\.\d s", lines[0])
    assert re.fullmatch(r"training: done in \d+\.\d s", lines[1])
    assert re.fullmatch(r"reading: 3/3 in \d+\.\d s", lines[2])


def test_a_stage_stopped_by_an_error_still_ends_once():
    out, buffer = console(False)
    with pytest.raises(ValueError, match="bad image"), stages(out) as progress:
        for i in track(range(5), progress, "checking"):
            if i == 2:
                raise ValueError("bad image")
    assert re.fullmatch(r"checking: 2/5 in \d+\.\d s\n", buffer.getvalue())


def test_without_progress_nothing_is_shown():
    assert list(track([1, 2], None, "anything")) == [1, 2]
    with stage(None, "anything") as step:
        step()
