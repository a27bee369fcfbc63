"""Quitting while a step runs: say what happens to the step, then ask."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


class QuitScreen(ModalScreen[bool]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Quit", id="quit-yes"),
        Binding("n,escape", "answer(False)", "Keep running", id="quit-no"),
    ]

    def __init__(self, step_title: str, run_id: str) -> None:
        super().__init__()
        self.step_title = step_title
        self.run_id = run_id

    def compose(self) -> ComposeResult:
        with Vertical(id="quit-dialog", classes="dialog -warning") as dialog:
            dialog.border_title = "Quit while a step runs?"
            yield Static(
                f"{self.step_title} is running. Quitting stops it and records it as "
                f"interrupted; the run stays resumable: start preskool-dr again and choose "
                f"run {self.run_id}, or `preskool-dr restore --resume {self.run_id}`."
            )
            yield Static("y quits · n or Esc keeps it running", classes="dialog-keys")

    def action_answer(self, quit_now: bool) -> None:
        self.dismiss(quit_now)
