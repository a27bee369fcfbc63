"""What the base backups and the WAL archive can reach, as the PITR form shows it: per base
backup, the whole seconds a target can take, and why nothing (or less) can be reached."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Static
from textual.worker import get_current_worker

from preskool_dr.core.base.events import Event, EventSink, Notice
from preskool_dr.core.base.settings import Config
from preskool_dr.core.pitr.plan import RecoverableRange, recoverable_ranges

RangesProvider = Callable[[Config, EventSink], list[RecoverableRange]]
READING = "Reading the base backups and the WAL archive (pg_waldump)…"


def archive_ranges(config: Config, on_event: EventSink) -> list[RecoverableRange]:
    """What the base backups and the WAL archive can reach (runs pg_waldump: seconds)."""
    return recoverable_ranges(config, on_event=on_event)


def seconds(at: datetime) -> str:
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


def whole_seconds(item: RecoverableRange) -> tuple[datetime, datetime] | None:
    """The first and last whole second a typed target can name inside `item` (its start is
    included, its end is not); None when not one fits."""
    if item.end is None:
        return None
    first = item.start.replace(microsecond=0)
    if first < item.start:
        first += timedelta(seconds=1)
    last = item.end.replace(microsecond=0)
    if last == item.end:
        last -= timedelta(seconds=1)
    return (first, last) if first <= last else None


def span(first: datetime, last: datetime) -> str:
    """`2026-02-20 02:30:42 → 04:48:02`: the date once when both ends share it."""
    end = seconds(last)
    return f"{seconds(first)} → {end[11:] if end[:10] == seconds(first)[:10] else end}"


def ranges_table(ranges: list[RecoverableRange], notes: list[str]) -> RenderableType:
    """Per base backup, newest first: the whole seconds a target can take (usable ones bold,
    with ✔), the archive it relies on, and why nothing or less can be reached."""
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(no_wrap=True, width=1)
    grid.add_column(ratio=1)
    if not ranges:
        grid.add_row(
            "✖",
            Text(
                "No base backup: take one with `preskool-dr backup --kind base`; point-in-time "
                "recovery starts from one.",
                style="bold",
            ),
        )
    for item in ranges:
        window = whole_seconds(item) if item.usable else None
        if window is not None:
            grid.add_row("✔", Text(f"{span(*window)}  {item.base.name}", style="bold"))
            grid.add_row("", Text(f"+ archived WAL up to {item.last_segment}", style="dim"))
        else:
            grid.add_row("✖", Text(f"{seconds(item.start)} only  {item.base.name}", style="dim"))
            why = (
                "less than a second of archive after it: nothing to choose"
                if item.usable
                else "no transaction archived after this backup yet: wait for the next WAL "
                "segment (or SELECT pg_switch_wal() on production)"
            )
            grid.add_row("", Text(why, style="dim"))
        if item.gap:
            after = seconds(item.end) if item.end else "the backup"
            grid.add_row(
                "",
                Text(
                    f"WAL gap: segment {item.gap} is missing: nothing after {after} can be "
                    "replayed from this backup (restore that segment from another copy to "
                    "reach later times)",
                    style="bold",
                ),
            )
    for note in notes:
        grid.add_row("!", Text(note, style="dim"))
    return grid


class PitrRanges(VerticalScroll):
    """`#pitr-ranges-box`: the table, read in a thread worker (pg_waldump takes seconds).
    `ranges` is None while reading, [] when the archive could not be read."""

    class Read(Message):
        """The worker's answer: the ranges and notes, or why they could not be read."""

        def __init__(
            self, ranges: list[RecoverableRange], notes: list[str], error: Exception | None
        ) -> None:
            super().__init__()
            self.ranges = ranges
            self.notes = notes
            self.error = error

    def __init__(self, config: Config, provider: RangesProvider, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.config = config
        self.provider = provider
        self.ranges: list[RecoverableRange] | None = None

    def compose(self) -> ComposeResult:
        yield Static(READING, id="pitr-ranges", markup=False)

    def on_mount(self) -> None:
        self.reload()

    def reload(self) -> None:
        self.ranges = None
        self.query_one("#pitr-ranges", Static).update(READING)
        self._read()

    @work(thread=True, exclusive=True, exit_on_error=False, group="pitr-ranges", name="ranges")
    def _read(self) -> None:
        notes: list[str] = []

        def collect(event: Event) -> None:
            if isinstance(event, Notice):
                notes.append(event.text)

        try:
            read = self.Read(self.provider(self.config, collect), notes, None)
        except Exception as exc:  # shown in place of the table
            read = self.Read([], [], exc)
        if not get_current_worker().is_cancelled:  # a reload replaced this reading
            self.post_message(read)

    def on_pitr_ranges_read(self, message: Read) -> None:
        message.stop()
        widget = self.query_one("#pitr-ranges", Static)
        self.ranges = message.ranges
        if message.error is not None:
            widget.update(Text(f"Cannot read the archive: {message.error}", style="bold"))
        else:
            widget.update(ranges_table(message.ranges, message.notes))
