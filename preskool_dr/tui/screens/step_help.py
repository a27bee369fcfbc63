"""`?`: everything about the selected step, and the keys."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from preskool_dr.core.config import StepText
from preskool_dr.core.journal import StepRecord

KEYS = """\
r  run the selected step          R  retry a failed step
s  skip it (asks a reason)        b  backups browser
?  this help                      t  incident time (RTO start)
/  filter backups                 g  request a Glacier restore
↑↓ choose a step                  1-4  Backups, Checksum, Restore, Log
ctrl+p  every action by name      q  quit (asks while a step runs)
Destructive steps ask for the database name typed, then Enter."""


class StepHelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "close", "Close", id="close-help")
    ]

    def __init__(
        self, number: int, step: StepText, record: StepRecord | None, blocked: str | None
    ) -> None:
        super().__init__()
        self.number = number
        self.step = step
        self.record = record
        self.blocked = blocked

    def compose(self) -> ComposeResult:
        text = Text()
        text.append(self.step.explain + "\n\n")
        text.append("Runbook command:\n", style="bold")
        text.append(f"  {self.step.command}\n\n")
        if self.record is not None:
            text.append(f"Status: {self.record.status.value}", style="bold")
            text.append(f"  {self.record.detail}\n" if self.record.detail else "\n")
            if self.record.skip_reason:
                text.append(f"Skip reason: {self.record.skip_reason}\n")
            if self.record.output:
                text.append("Last output:\n", style="bold")
                for line in self.record.output[-10:]:
                    text.append(f"  {line}\n")
        if self.blocked:
            text.append(f"Cannot run now: {self.blocked}\n", style="bold")
        text.append("\nKeys\n", style="bold")
        text.append(KEYS)
        with VerticalScroll(id="help-dialog", classes="dialog") as dialog:
            dialog.border_title = f"Step {self.number}: {self.step.title}"
            dialog.border_subtitle = "Esc closes"
            yield Static(text)

    def action_close(self) -> None:
        self.dismiss(None)
