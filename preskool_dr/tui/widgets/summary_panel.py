"""The end-of-run panel: RTO and RPO against their targets, the checks, the backup, the
aside copy with the commands that drop it or bring it back, the journal and the report.
`d` here asks to drop the aside copy (by its typed name) while one is kept."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Static


class SummaryPanel(VerticalScroll):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "drop_aside", "Drop aside copy", tooltip="Drop the old database kept aside")
    ]

    class DropAsideRequested(Message):
        """The operator asked to drop the aside copy from the summary."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.aside_kept = False
        self.lines: list[str] = []

    def compose(self) -> ComposeResult:
        yield Static("The run has not ended yet.", id="summary-text", markup=False)

    def show(self, lines: list[str], *, aside_kept: bool) -> None:
        self.lines = lines
        self.aside_kept = aside_kept
        self.query_one("#summary-text", Static).update("\n".join(lines))
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "drop_aside":
            return self.aside_kept  # out of the footer once there is nothing to drop
        return True

    def action_drop_aside(self) -> None:
        self.post_message(self.DropAsideRequested())
