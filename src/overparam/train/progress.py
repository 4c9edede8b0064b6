"""Progress bars on long work: tqdm on a terminal, silent when quiet or when output is not a terminal."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass


class Progress:
    """A factory of progress bars; ``Progress(enabled=False)`` makes every bar a no-op."""

    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    @contextmanager
    def bar(self, total: int, desc: str) -> Iterator:
        if not self.enabled:
            yield _Silent()
            return
        from tqdm import tqdm

        with tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr) as bar:
            yield bar


SILENT = Progress(enabled=False)
