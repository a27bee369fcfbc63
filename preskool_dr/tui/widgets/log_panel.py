"""Everything that happened, timestamped; bounded so a chatty restore cannot eat the memory."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from rich.text import Text
from textual.widgets import RichLog

MAX_LINES = 2000


class LogPanel(RichLog):
    def __init__(self, now: Callable[[], datetime], *, id: str | None = None) -> None:
        super().__init__(max_lines=MAX_LINES, wrap=True, markup=False, min_width=1, id=id)
        self.now = now

    def add(self, source: str, text: str, style: str = "") -> None:
        line = Text(f"{self.now():%H:%M:%S} ", style="dim")
        line.append(f"[{source}] ", style="bold")
        line.append(text, style=style)
        self.write(line)
