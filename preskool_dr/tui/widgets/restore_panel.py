"""Download and restore progress: bar, bytes, rate, ETA, current table, and the tables of
the backup with the ones already loaded ticked (psql's output beside them when there is
room, in their place when the backup lists no tables). A step that ends leaves one final
line saying what it did."""

from __future__ import annotations

import humanize
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import ProgressBar, Rule, Static

from preskool_dr.core.base.events import Progress, StepStatus
from preskool_dr.core.restore.journal import StepRecord
from preskool_dr.tui.format import REDRAW_SECONDS, clock
from preskool_dr.tui.widgets.log_panel import BufferedLog

PHASE_LABELS = {"download": "downloading", "load": "restoring", "verify": "verifying"}
OUTPUT_LINES = 500  # psql's output kept on screen; the log panel keeps more
WIDE_COLUMNS = 70  # from this panel width on, the per-table list is shown beside the output
_UNITS = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def _amount(value: float, scale: int) -> str:
    shown = value / scale
    return f"{shown:.1f}" if shown < 10 else f"{shown:.0f}"


def done_of_total(done: int, total: int | None) -> str:
    """`118/194 MiB`: both in the unit of the total, short enough for 80 columns."""
    reference = total or done
    unit, scale = next(((u, s) for u, s in _UNITS if reference >= s), ("B", 1))
    if total:
        return f"{_amount(done, scale)}/{_amount(total, scale)} {unit}"
    return f"{_amount(done, scale)} {unit}"


def table_name(qualified: str) -> str:
    """`public.attendance` (as pg_dump writes it) -> `attendance` (as the meta counts it)."""
    return qualified.rsplit(".", 1)[-1].strip('"')


def table_names(current: str | None) -> set[str]:
    """The tables a progress update says are loading: the parallel loader names several
    (`public.a, public.b`), the others one; other words (`schema`, `indexes ...`) match no
    table of the backup and so tick the ones before them."""
    if not current:
        return set()
    return {table_name(part.strip()) for part in current.split(", ")}


def final_line(
    step_id: str, record: StepRecord, last: Progress | None, tables: int, loaded: int
) -> str:
    """`restored 18 tables, 22.6 MiB in 9.3 s`: what the step did, once it has ended."""
    seconds = f"{record.elapsed_seconds or 0.0:.1f} s"
    amount = ""
    if last is not None and last.unit == "bytes" and last.total:
        amount = done_of_total(last.total if record.status is StepStatus.DONE else last.done, None)
    if step_id == "download":
        if record.status is StepStatus.DONE:
            return f"downloaded {amount} in {seconds}" if amount else record.detail
        return f"download {record.status.value} after {seconds}" + (
            f" ({amount} fetched)" if amount else ""
        )
    if record.status is StepStatus.DONE:
        count = f"{tables} tables" if tables else "the backup"
        return f"restored {count}" + (f", {amount}" if amount else "") + f" in {seconds}"
    of = f"{loaded} of {tables} tables loaded" if tables else "partly loaded"
    return f"restore {record.status.value} after {seconds}: {of}"


def progress_lines(progress: Progress, tables_total: int | None = None) -> tuple[str, str]:
    """(`118/194 MiB · 389 KiB/s · ETA 3:20`, `restoring attendance (3 of 18 tables done)`)."""
    if progress.unit == "bytes":
        stats = done_of_total(progress.done, progress.total)
        rate = f" · {done_of_total(int(progress.rate), None)}/s" if progress.rate > 0 else ""
    else:
        stats = f"{progress.done}/{progress.total}" if progress.total else str(progress.done)
        rate = f" · {progress.rate:.1f}/s" if progress.rate > 0 else ""
    eta = progress.eta_seconds
    stats += rate + (f" · ETA {clock(eta)}" if eta is not None else "")
    phase = PHASE_LABELS.get(progress.phase, progress.phase)
    if progress.current:
        of = f" of {tables_total}" if tables_total else ""
        done = f"({progress.items_done}{of} tables done)"
        return stats, f"{phase} {table_name(progress.current)}  {done}"
    return stats, phase


class RestorePanel(Vertical):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._pending: Progress | None = None
        self.expected_rows: dict[str, int] = {}  # from the backup's meta: what will be loaded
        self.loaded: list[str] = []  # tables whose COPY finished, in load order
        self.current: set[str] = set()  # the tables loading now
        self.last: Progress | None = None  # what is on screen now
        self.ended = False  # the final line is drawn: late progress must not replace it

    def compose(self) -> ComposeResult:
        yield Static("Nothing downloading or restoring yet.", id="restore-title", markup=False)
        yield ProgressBar(total=None, show_eta=False, id="restore-bar")
        yield Static(id="restore-stats", markup=False)
        yield Static(id="restore-table", markup=False)
        yield Rule()
        with Horizontal(id="restore-body"):
            yield BufferedLog(max_lines=OUTPUT_LINES, id="restore-output")
            yield Static(id="restore-tables", markup=False)

    def on_mount(self) -> None:
        self.query_one("#restore-bar").display = False  # no pulsing bar before there is work
        self.set_interval(REDRAW_SECONDS, self._flush)

    def on_resize(self, event: events.Resize) -> None:
        self.set_class(event.size.width >= WIDE_COLUMNS, "-wide")

    def begin(self, title: str, expected_rows: dict[str, int] | None = None) -> None:
        self.query_one("#restore-title", Static).update(title)
        self.expected_rows = dict(expected_rows or {})
        self.loaded, self.current, self._pending, self.last = [], set(), None, None
        self.ended = False
        self.set_class(bool(self.expected_rows), "-tables")
        bar = self.query_one("#restore-bar", ProgressBar)
        bar.update(total=None, progress=0)
        bar.display = False
        self.query_one("#restore-stats", Static).update("")
        self.query_one("#restore-table", Static).update("")
        self._draw_tables()

    def show_progress(self, progress: Progress) -> None:
        if self.ended:
            return
        self._pending = progress  # drawn by the timer: redraws are capped, updates are not lost

    def write_line(self, text: str) -> None:
        self.query_one("#restore-output", BufferedLog).push(Text(text))

    def settle(self) -> None:
        """Draw the last progress now rather than at the next redraw."""
        self._flush()

    def finish(self, step_id: str, record: StepRecord) -> None:
        """The step ended: a full bar or none, every table ticked after a whole load, and
        one line saying what was done in place of the rate and ETA."""
        self._flush()
        self.ended = True
        done = record.status is StepStatus.DONE
        if done and step_id == "restore":
            self.loaded = sorted(self.expected_rows)
        self.current = set()
        self._draw_tables()
        bar = self.query_one("#restore-bar", ProgressBar)
        if done and bar.total:
            bar.update(progress=bar.total)
        else:
            bar.display = False
        loaded = len([name for name in self.loaded if name in self.expected_rows])
        line = final_line(step_id, record, self.last, len(self.expected_rows), loaded)
        self.query_one("#restore-stats", Static).update(line)
        self.query_one("#restore-table", Static).update("")

    def _flush(self) -> None:
        progress, self._pending = self._pending, None
        if progress is None:
            return
        self.last = progress
        bar = self.query_one("#restore-bar", ProgressBar)
        if progress.total:
            bar.update(total=progress.total, progress=progress.done)
            bar.display = True
        tables_total = len(self.expected_rows) or None
        stats, where = progress_lines(progress, tables_total)
        self.query_one("#restore-stats", Static).update(stats)
        self.query_one("#restore-table", Static).update(where)
        current = table_names(progress.current)
        if current != self.current:
            # a table that is no longer loading has had its COPY finish
            self.loaded += [
                name for name in sorted(self.current - current) if name not in self.loaded
            ]
            self.current = current
            self._draw_tables()

    def _draw_tables(self) -> None:
        text = Text()
        for name in sorted(self.expected_rows):
            if name in self.loaded:
                icon = "✔"
            elif name in self.current:
                icon = "▶"
            else:
                icon = "·"
            rows = humanize.intcomma(self.expected_rows[name])
            text.append(f"{icon} {name:<18} {rows:>9}\n", style="bold" if icon == "▶" else "")
        self.query_one("#restore-tables", Static).update(text)
