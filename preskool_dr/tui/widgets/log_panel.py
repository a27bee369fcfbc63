"""Everything that happened, timestamped; bounded so a chatty restore cannot eat the memory
or the screen's time.

An application command or psql can print hundreds of thousands of lines. Writing each one
to the RichLog renders it on its own (and while the panel is hidden, RichLog queues every
write unbounded until it is first shown). So lines wait in a buffer that keeps only the
newest MAX_LINES, and a timer draws what is waiting in one write at most ~4 times a
second: the work per redraw is bounded, whatever the flood. The restore panel's psql
output goes through the same BufferedLog.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import datetime

import humanize
from rich.text import Text
from textual.widgets import RichLog

from preskool_dr.tui.format import REDRAW_SECONDS

MAX_LINES = 2000


class BufferedLog(RichLog):
    """A RichLog fed through a bounded buffer and drawn in batches by a timer."""

    def __init__(self, *, max_lines: int, id: str | None = None) -> None:
        super().__init__(max_lines=max_lines, wrap=True, markup=False, min_width=1, id=id)
        # one place is kept for the note on dropped lines, so it is never trimmed itself
        self.waiting: deque[Text] = deque(maxlen=max_lines - 1)
        self.dropped = 0  # lines pushed out of `waiting` before they were drawn

    def on_mount(self) -> None:
        self.set_interval(REDRAW_SECONDS, self.flush)

    def on_show(self) -> None:
        # what waited while the panel was hidden is drawn as soon as it has its size
        self.call_after_refresh(self.flush)

    def push(self, line: Text) -> None:
        if len(self.waiting) == self.waiting.maxlen:
            self.dropped += 1
        self.waiting.append(line)

    def flush(self) -> None:
        """Draw the waiting lines in one write. Not before the panel has a size: RichLog
        would queue the write, and the bounded buffer is the better place to wait."""
        if not self.waiting or not self.size.width:
            return
        lines = list(self.waiting)
        self.waiting.clear()
        if self.dropped:
            note = f"... {humanize.intcomma(self.dropped)} older lines not shown (flood)"
            lines.insert(0, Text(note, style="dim italic"))
            self.dropped = 0
        self.write(Text("\n").join(lines))


class LogPanel(BufferedLog):
    def __init__(self, now: Callable[[], datetime], *, id: str | None = None) -> None:
        super().__init__(max_lines=MAX_LINES, id=id)
        self.now = now

    def add(self, source: str, text: str, style: str = "", at: datetime | None = None) -> None:
        """A line stamped now, or `at` (a resumed run's history, from its journal)."""
        line = Text(f"{at or self.now():%H:%M:%S} ", style="dim")
        line.append(f"[{source}] ", style="bold")
        line.append(text, style=style)
        self.push(line)
