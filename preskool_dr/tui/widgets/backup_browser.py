"""Every backup, local and S3, newest first: sortable, filterable, Enter chooses one."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

import humanize
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Static

from preskool_dr.core.storage.catalog import BackupRecord
from preskool_dr.tui.format import size

# (label, sort key): sorting uses the values, not the text shown. The time comes first and
# the long name last: at 80 columns the detail line under the table carries the name.
COLUMNS: tuple[tuple[str, Callable[[BackupRecord], Any]], ...] = (
    ("Time (UTC)", lambda r: r.time),
    ("Age", lambda r: r.time),
    ("Kind", lambda r: r.kind),
    ("Size", lambda r: r.size or 0),
    ("Where", lambda r: "+".join(r.locations)),
    ("Storage", lambda r: r.storage_class or ""),
    ("MD5", lambda r: r.has_md5),
    ("Name", lambda r: r.name),
)


def storage_text(record: BackupRecord) -> str:
    cls = record.storage_class or "-"
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
        self.sort_column = 0
        self.sort_reverse = True  # newest first
        self.message = "Loading the backup catalog…"

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter: text in name, kind, place or class", id="backup-filter")
        table: DataTable[str | Text] = DataTable(
            cursor_type="row", zebra_stripes=True, id="backup-table"
        )
        yield table
        yield Static(self.message, id="backup-detail", markup=False)

    def on_mount(self) -> None:
        table = self.table
        for label, _ in COLUMNS:
            table.add_column(label, key=label)
        self.query_one("#backup-filter", Input).display = False

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
        key = COLUMNS[self.sort_column][1]
        return sorted(rows, key=key, reverse=self.sort_reverse)

    def highlighted(self) -> BackupRecord | None:
        table = self.table
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((r for r in self.records if r.name == key), None)

    def _rebuild(self) -> None:
        table = self.table
        keep = self.highlighted()
        table.clear()
        now = self.now()
        for record in self.visible_records():
            table.add_row(
                f"{record.time:%Y-%m-%d %H:%M}",
                humanize.naturaldelta(now - record.time),
                record.kind,
                size(record.size),
                "+".join(record.locations) or "-",
                storage_text(record),
                "✔" if record.has_md5 else "✖ none",
                record.name,
                key=record.name,
            )
        if keep is not None and keep.name in table.rows:
            table.move_cursor(row=table.get_row_index(keep.name))
        self._show_detail()

    def _show_detail(self) -> None:
        record = self.highlighted()
        detail = self.query_one("#backup-detail", Static)
        if record is None:
            detail.update(self.message if not self.filter_text else "No backup matches the filter.")
            return
        where = "+".join(record.locations)
        text = (
            f"{record.name}\n"
            f"{record.kind} · {size(record.size)} · {where} · {record.storage_class or 'disk'}\n"
        )
        if record.needs_restore:
            text += "archived, not downloadable yet: g restores"
        elif not record.has_md5:
            text += "no .md5 sidecar: step 4 will refuse it"
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
        self.sort_by(event.column_index)

    def sort_by(self, column: int) -> None:
        """Sort by `column`; the same column again reverses the order."""
        if column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = column, False
        self._rebuild()

    def action_sort(self) -> None:
        self.sort_by((self.sort_column + 1) % len(COLUMNS))

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
