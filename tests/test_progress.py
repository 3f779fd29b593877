"""Progress output: a bar on a terminal, a few plain lines elsewhere."""

from __future__ import annotations

import io

from tqdm.auto import tqdm

from retain.progress import PlainProgress, progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_gives_about_ten_plain_lines() -> None:
    out = io.StringIO()
    bar = progress(100, "task 1/3 agnews", True, stream=out)
    assert isinstance(bar, PlainProgress)
    for step in range(100):
        bar.set_postfix(loss=f"{1.0 / (step + 1):.3f}")
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert 9 <= len(lines) <= 11 and "\r" not in out.getvalue()
    assert lines[0] == "task 1/3 agnews: 10/100 loss=0.100"
    assert lines[-1] == "task 1/3 agnews: 100/100 loss=0.010"


def test_resumed_bar_starts_at_its_step_and_lines_one_prints_only_the_end() -> None:
    out = io.StringIO()
    bar = progress(5, "eval stage 2", True, stream=out, lines=1)
    for _ in range(5):
        bar.update(1)
    bar.close()
    assert out.getvalue().splitlines() == ["eval stage 2: 5/5"]
    out = io.StringIO()
    bar = progress(20, "task 2/3 x", True, initial=15, stream=out)
    for _ in range(5):
        bar.update(1)
    bar.close()
    assert out.getvalue().splitlines()[-1] == "task 2/3 x: 20/20"


def test_a_terminal_gets_a_tqdm_bar_and_disabled_prints_nothing() -> None:
    assert isinstance(progress(10, "x", True, stream=_Tty()), tqdm)
    out = io.StringIO()
    bar = progress(10, "x", False, stream=out)
    bar.update(10)
    bar.close()
    assert out.getvalue() == ""
