"""Quitting while a step runs, or with a run half done: say what it leaves, then ask."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


class QuitScreen(ModalScreen[bool]):
    """`title` asks; `text` says what quitting leaves behind and how to come back."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Quit", id="quit-yes"),
        Binding("n,escape", "answer(False)", "Keep running", id="quit-no"),
    ]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_text = title
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(id="quit-dialog", classes="dialog -warning") as dialog:
            dialog.border_title = self.title_text
            yield Static(self.text)
            yield Static("y quits · n or Esc stays", classes="dialog-keys")

    def action_answer(self, quit_now: bool) -> None:
        self.dismiss(quit_now)
