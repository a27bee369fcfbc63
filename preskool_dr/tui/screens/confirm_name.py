"""Typed confirmation for anything destructive: the exact name, then Enter. Never one key."""

from __future__ import annotations

from typing import ClassVar

from rich.console import RenderableType
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

PLACEHOLDER = "type the database name"


class ConfirmNameScreen(ModalScreen[str | None]):
    """Dismisses with the typed name when it equals `expected`; None on Esc."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="cancel-confirm")
    ]

    def __init__(self, title: str, body: RenderableType, expected: str, prompt: str) -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.expected = expected
        self.prompt = prompt

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog", classes="dialog -danger") as dialog:
            dialog.border_title = self.title_text
            yield Static(self.body, id="confirm-body", markup=False)
            yield Static(self.prompt, id="confirm-prompt", markup=False)
            # never the answer as placeholder: grey text that equals it looks filled in
            yield Input(placeholder=PLACEHOLDER, id="confirm-input")
            yield Static("", id="confirm-error", markup=False)
            yield Static("Enter confirms · Esc cancels", classes="dialog-keys")

    @on(Input.Submitted, "#confirm-input")
    def _submitted(self, event: Input.Submitted) -> None:
        typed = event.value
        error = self.query_one("#confirm-error", Static)
        if not typed:
            error.update(f"Nothing typed: type {self.expected} exactly. Nothing was changed.")
        elif typed != self.expected:
            error.update(f"{typed!r} is not {self.expected!r}: nothing was changed. Try again.")
            event.input.value = ""  # the next try starts clean, not appended to this one
        else:
            self.dismiss(typed)

    def action_cancel(self) -> None:
        self.dismiss(None)
