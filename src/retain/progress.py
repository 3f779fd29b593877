"""Progress that reads well where it is shown: a tqdm bar on a terminal, plain periodic lines
elsewhere (CI logs, files), where a redrawn bar would leave thousands of carriage returns."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm.auto import tqdm


class PlainProgress:
    """tqdm's `update` / `set_postfix` / `close`, printed as one line every `every` steps (about
    ten lines per bar) or at most every `min_seconds`, and once at the end."""

    def __init__(
        self,
        total: int,
        initial: int = 0,
        desc: str = "",
        stream: TextIO | None = None,
        lines: int = 10,
        min_seconds: float = 30.0,
    ) -> None:
        self.total, self.n, self.desc = total, initial, desc
        self.stream = stream if stream is not None else sys.stderr
        self.every = max(1, total // max(lines, 1))
        self.min_seconds = min_seconds
        self.postfix: dict[str, Any] = {}
        self._last_time = time.monotonic()
        self._last_n = initial

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def update(self, n: int = 1) -> None:
        self.n += n
        due = self.n - self._last_n >= self.every
        slow = time.monotonic() - self._last_time >= self.min_seconds
        if (due or slow) and self.n < self.total:
            self._print()

    def close(self) -> None:
        if self.n != self._last_n or self.n == 0:
            self._print()

    def _print(self) -> None:
        extra = " ".join(f"{k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc}: {self.n}/{self.total} {extra}".rstrip(), file=self.stream, flush=True)
        self._last_time, self._last_n = time.monotonic(), self.n


def progress(
    total: int,
    desc: str,
    enabled: bool,
    initial: int = 0,
    stream: TextIO | None = None,
    lines: int = 10,
) -> Any:
    """A bar on a terminal, `PlainProgress` (about `lines` lines) when the output is not one,
    nothing if disabled."""
    out = stream if stream is not None else sys.stderr
    if not enabled:
        return tqdm(total=total, initial=initial, disable=True)
    if out.isatty():
        return tqdm(total=total, initial=initial, desc=desc, leave=False, file=out)
    return PlainProgress(total, initial, desc, stream=out, lines=lines)
