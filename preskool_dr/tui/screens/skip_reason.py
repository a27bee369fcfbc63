"""A skip needs a reason: it goes into the journal and the drill log."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class SkipReasonScreen(ModalScreen[str | None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="cancel-skip")
    ]

    def __init__(self, number: int, title: str) -> None:
        super().__init__()
        self.number = number
        self.step_title = title

    def compose(self) -> ComposeResult:
        with Vertical(id="skip-dialog", classes="dialog") as dialog:
            dialog.border_title = f"Skip step {self.number}: {self.step_title}"
            yield Static("Why is this step skipped? The reason is kept in the run's journal.")
            yield Input(
                placeholder="e.g. the app was already stopped by the host team", id="skip-input"
            )
            yield Static("", id="skip-error", markup=False)
            yield Static("Enter skips · Esc cancels", classes="dialog-keys")

    @on(Input.Submitted, "#skip-input")
    def _submitted(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            self.query_one("#skip-error", Static).update("A skip needs a reason.")
            return
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)
