"""Every backup, local and S3, newest first: sortable, filterable, Enter chooses one."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Static

from preskool_dr.core.base.age import is_encrypted_name
from preskool_dr.core.storage.backup_names import is_logical_name
from preskool_dr.core.storage.catalog import BackupRecord
from preskool_dr.tui.format import size

# label -> sort key: sorting uses the values, not the text shown.
SORT_KEYS: dict[str, Callable[[BackupRecord], Any]] = {
    "State": lambda r: (r.needs_restore, not r.has_md5),
    "Time (UTC)": lambda r: r.time,
    "Age": lambda r: r.time,
    "Kind": lambda r: r.kind,
    "Size": lambda r: r.size or 0,
    "Where": lambda r: "+".join(r.locations),
    "Storage": lambda r: r.storage_class or "",
    "Name": lambda r: r.name,
}
# The columns for the table's width: the state, time, age, kind and size always fit (80
# columns); where and storage from MEDIUM_WIDTH on, the long name from WIDE_WIDTH on (the
# detail line under the table carries the name, place and class at any width).
NARROW = ("State", "Time (UTC)", "Age", "Kind", "Size")
MEDIUM = (*NARROW, "Where", "Storage")
WIDE = (*MEDIUM, "Name")
MEDIUM_WIDTH, WIDE_WIDTH = 66, 110
# The state column, one mark each (they read without colour; the detail line spells them out)
CHOSEN, FAILED_VERIFY, ARCHIVED, RESTORING, NO_MD5 = "▶", "✖", "G", "…", "?"


def columns_for(width: int) -> tuple[str, ...]:
    if width >= WIDE_WIDTH:
        return WIDE
    return MEDIUM if width >= MEDIUM_WIDTH else NARROW


def short_size(count: int | None) -> str:
    """14M, 163K, 1.2G: the unit always shows, in five columns at most."""
    if count is None:
        return "?"
    value = float(count)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.1f}{unit}" if value < 10 and unit != "B" else f"{value:.0f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def short_age(seconds: float) -> str:
    """5m, 3h, 2d: the age at a glance."""
    minutes = max(0, int(seconds // 60))
    if minutes < 60:
        return f"{minutes}m"
    if minutes < 48 * 60:
        return f"{minutes // 60}h"
    return f"{minutes // (24 * 60)}d"


def state_marks(record: BackupRecord, chosen: str | None, failed: set[str]) -> Text:
    marks = Text()
    if record.name == chosen:
        marks.append(CHOSEN, style="bold")
    if record.name in failed:
        marks.append(FAILED_VERIFY, style="bold red")
    if record.needs_restore:
        marks.append(RESTORING if record.restore_state == "in-progress" else ARCHIVED)
    if not record.has_md5:
        marks.append(NO_MD5, style="bold")
    return marks


def lock_text(record: BackupRecord) -> str:
    """`locked GOVERNANCE to 2026-03-01` while the S3 copy is under Object Lock, else ""."""
    until = record.lock_until
    if record.lock_mode is None or until is None or until <= datetime.now(UTC):
        return ""
    return f"locked {record.lock_mode} to {until:%Y-%m-%d}"


def is_good(record: BackupRecord, failed: set[str]) -> bool:
    """A backup the run can take as it is: a logical dump with its .md5 sidecar, downloadable
    now (not archived), not refused, not dated in the future, not failed in this run."""
    return (
        is_logical_name(record.name)
        and record.has_md5
        and not record.needs_restore
        and record.bad is None
        and not record.future
        and record.name not in failed
    )


def storage_text(record: BackupRecord) -> str:
    cls = record.storage_class or "-"
    if lock := lock_text(record):
        cls = f"{cls} ({lock})"
    if record.needs_restore:
        state = "restoring" if record.restore_state == "in-progress" else "archived: g restores"
        return f"{cls} ({state})"
    return cls


def searchable(record: BackupRecord) -> str:
    places = "+".join(record.locations)
    return f"{record.name} {record.kind} {places} {storage_text(record)}".lower()


class BackupBrowser(Vertical):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter", tooltip="Filter backups by text", id="filter"),
        Binding(
            "g",
            "request_restore",
            "Glacier restore",
            tooltip="Ask S3 to restore the highlighted archived backup",
            id="request-restore",
        ),
        Binding("o", "sort", "Sort", tooltip="Sort by the next column", id="sort"),
        Binding(
            "O", "reverse_sort", "Reverse", tooltip="Reverse the order", show=False, id="reverse"
        ),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    class Chosen(Message):
        def __init__(self, record: BackupRecord) -> None:
            super().__init__()
            self.record = record

    class RestoreRequested(Message):
        def __init__(self, record: BackupRecord) -> None:
            super().__init__()
            self.record = record

    def __init__(self, now: Callable[[], datetime], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.now = now
        self.records: list[BackupRecord] = []
        self.sort_column = "Time (UTC)"
        self.sort_reverse = True  # newest first
        self.columns: tuple[str, ...] = ()  # those shown, for the table's width
        self.chosen: str | None = None  # the run's backup
        self.failed: set[str] = set()  # backups whose checksum step failed in this run
        self.message = "Loading the backup catalog…"
        self.aiming = False  # put the cursor on the newest good backup once they are listed

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter: text in name, kind, place or class", id="backup-filter")
        table: DataTable[str | Text] = DataTable(
            cursor_type="row", zebra_stripes=True, id="backup-table"
        )
        yield table
        yield Static(self.message, id="backup-detail", markup=False)

    def on_mount(self) -> None:
        self.query_one("#backup-filter", Input).display = False

    def on_resize(self) -> None:
        columns = columns_for(self.size.width)
        if columns != self.columns:
            self.columns = columns
            self.table.clear(columns=True)
            for label in columns:
                self.table.add_column(label, key=label)
            self._rebuild()

    def show_run(self, chosen: str | None, failed_verify: bool) -> None:
        """Mark the run's backup, and keep it marked bad once its checksum step failed."""
        failed = self.failed | {chosen} if chosen and failed_verify else self.failed
        if (chosen, failed) != (self.chosen, self.failed):
            self.chosen, self.failed = chosen, failed
            self._rebuild()

    @property
    def table(self) -> DataTable[str | Text]:
        return self.query_one("#backup-table", DataTable)

    @property
    def filter_text(self) -> str:
        return self.query_one("#backup-filter", Input).value.strip().lower()

    def set_backups(self, records: list[BackupRecord], message: str) -> None:
        self.records = records
        self.message = message
        self._rebuild()

    def visible_records(self) -> list[BackupRecord]:
        needle = self.filter_text
        rows = [
            r
            for r in self.records
            if not needle
            or needle
            in " ".join(
                [
                    r.name,
                    r.kind,
                    "+".join(r.locations),
                    r.storage_class or "",
                    r.restore_state or "",
                ]
            ).lower()
        ]
        return sorted(rows, key=SORT_KEYS[self.sort_column], reverse=self.sort_reverse)

    def highlighted(self) -> BackupRecord | None:
        table = self.table
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((r for r in self.records if r.name == key), None)

    def _rebuild(self) -> None:
        table = self.table
        if not self.columns:
            return  # not sized yet: on_resize draws it
        keep = self.highlighted()
        table.clear()
        for record in self.visible_records():
            cells = self._cells(record)
            style = "dim" if record.needs_restore else ""
            table.add_row(
                *(
                    Text(cells[label], style=style) if label != "State" else cells[label]
                    for label in self.columns
                ),
                key=record.name,
            )
        if keep is not None and keep.name in table.rows:
            table.move_cursor(row=table.get_row_index(keep.name))
        if self.aiming and self.records:
            self._aim()
        self._show_detail()

    def newest_good(self) -> BackupRecord | None:
        good = [r for r in self.records if is_good(r, self.failed)]
        return max(good, key=lambda r: r.time) if good else None

    def aim_at_newest_good(self) -> None:
        """The cursor on the newest backup that will pass its checks, so Enter chooses it
        (now, or once the catalog is listed)."""
        self.aiming = True
        if self.records and self.columns:
            self._aim()
            self._show_detail()

    def _aim(self) -> None:
        self.aiming = False
        record = self.newest_good()
        if record is None:
            return
        table = self.table
        if record.name not in table.rows:  # hidden by the filter: show every backup again
            box = self.query_one("#backup-filter", Input)
            box.value, box.display = "", False
            self.aiming = True
            self._rebuild()
            return
        table.move_cursor(row=table.get_row_index(record.name))

    def _cells(self, record: BackupRecord) -> dict[str, Any]:
        wide = self.columns != NARROW
        return {
            "State": state_marks(record, self.chosen, self.failed),
            "Time (UTC)": f"{record.time:%Y-%m-%d %H:%M}" if wide else f"{record.time:%m-%d %H:%M}",
            "Age": short_age((self.now() - record.time).total_seconds()),
            "Kind": record.kind,
            "Size": short_size(record.size),
            "Where": "+".join(record.locations) or "-",
            "Storage": storage_text(record) if wide else "",
            "Name": record.name,
        }

    def _show_detail(self) -> None:
        record = self.highlighted()
        detail = self.query_one("#backup-detail", Static)
        if record is None:
            detail.update(self.message if not self.filter_text else "No backup matches the filter.")
            return
        where = "+".join(record.locations)
        extras = "".join(
            f" · {extra}"
            for extra in (
                lock_text(record),
                "encrypted (age): restoring it needs the identity"
                if is_encrypted_name(record.name)
                else "",
            )
            if extra
        )
        text = (
            f"{record.name}\n"
            f"{record.kind} · {size(record.size)} · {where} · {record.storage_class or 'disk'}"
            f"{extras}\n"
        )
        if record.name in self.failed:
            text += f"{FAILED_VERIFY} failed the checksum step in this run: choose another one"
        elif record.needs_restore:
            text += f"{ARCHIVED} archived, not downloadable yet: g restores"
        elif not record.has_md5:
            text += f"{NO_MD5} no .md5 sidecar: step 4 will refuse it"
        elif record.name == self.chosen:
            text += f"{CHOSEN} the run's backup"
        else:
            text += "Enter chooses it"
        detail.update(text)

    @on(DataTable.RowHighlighted, "#backup-table")
    def _highlighted(self) -> None:
        self._show_detail()
        self.screen.refresh_bindings()  # g is offered on an archived backup only

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "request_restore":
            record = self.highlighted()
            return record is not None and record.needs_restore
        return True

    @on(DataTable.RowSelected, "#backup-table")
    def _selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        record = next((r for r in self.records if r.name == event.row_key.value), None)
        if record is None:
            return
        if record.needs_restore:
            self.app.notify(
                f"{record.name} is in {record.storage_class} and cannot be downloaded yet: "
                "press g to request a restore, then choose it when it is available",
                severity="warning",
            )
            return
        self.post_message(self.Chosen(record))

    @on(DataTable.HeaderSelected, "#backup-table")
    def _sort(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(str(event.column_key.value))

    def sort_by(self, column: str) -> None:
        """Sort by `column`; the same column again reverses the order."""
        if column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = column, False
        self._rebuild()

    def action_sort(self) -> None:
        shown = list(self.columns) or [self.sort_column]
        at = shown.index(self.sort_column) if self.sort_column in shown else -1
        self.sort_by(shown[(at + 1) % len(shown)])

    def action_reverse_sort(self) -> None:
        self.sort_by(self.sort_column)

    @on(Input.Changed, "#backup-filter")
    def _filter_changed(self) -> None:
        self._rebuild()

    @on(Input.Submitted, "#backup-filter")
    def _filter_done(self) -> None:
        self.table.focus()

    def action_filter(self) -> None:
        box = self.query_one("#backup-filter", Input)
        box.display = True
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#backup-filter", Input)
        box.value = ""
        box.display = False
        self.table.focus()

    def action_request_restore(self) -> None:
        record = self.highlighted()
        if record is None:
            return
        if not record.s3_url:
            self.app.notify(f"{record.name} is not in S3: nothing to restore", severity="warning")
            return
        self.post_message(self.RestoreRequested(record))
