"""`?`: everything about the selected step, and the keys.

The help is a dialog mounted once on the main screen, on a layer above the panels, and shown
by toggling `display`; it never takes the focus. A pushed modal screen composed new widgets,
moved the focus (which restyles the focused widgets' ancestors and rebuilds the footer's
keys) and repainted a translucent full-screen backdrop on every press: about 90 ms at 120x40
with nothing else running, several times that while a restore shared the CPU and the
interpreter. The App's keys close it (Esc, ?, q), and arrows move through the steps with
the help following the selection.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from preskool_dr.core.base.settings import StepText
from preskool_dr.core.restore.journal import StepRecord

KEYS = """\
r  run the selected step          R  retry a failed step
u  roll back (after a failure)    p  point-in-time recovery
s  skip it (asks a reason)        b  backups browser
?  this help                      t  incident time (RTO start)
/  filter backups                 g  request a Glacier restore
↑↓ choose a step                  1-4  Backups, Checksum, Restore, Log
ctrl+p  every action by name      q  quit (asks while a step runs)
Destructive steps ask for the database name typed, then Enter."""

HELP_LAYER = "help"


def help_text(step: StepText, record: StepRecord | None, blocked: str | None) -> Text:
    text = Text()
    text.append(step.explain + "\n\n")
    text.append("Runbook command:\n", style="bold")
    text.append(f"  {step.command}\n\n")
    if record is not None:
        text.append(f"Status: {record.status.value}", style="bold")
        text.append(f"  {record.detail}\n" if record.detail else "\n")
        if record.skip_reason:
            text.append(f"Skip reason: {record.skip_reason}\n")
        if record.output:
            text.append("Last output:\n", style="bold")
            for line in record.output[-10:]:
                text.append(f"  {line}\n")
    if blocked:
        text.append(f"Cannot run now: {blocked}\n", style="bold")
    text.append("\nKeys\n", style="bold")
    text.append(KEYS)
    return text


class StepHelp(VerticalScroll, can_focus=False):
    """The help dialog (`#help-dialog`). The screen it is mounted on must list HELP_LAYER in
    its `layers`; its `align` centres the dialog (the panels fill the screen either way)."""

    DEFAULT_CSS = f"""
    StepHelp {{
        layer: {HELP_LAYER};
        display: none;
    }}
    """

    def __init__(self) -> None:
        super().__init__(id="help-dialog", classes="dialog")
        self.border_subtitle = "Esc closes"

    def compose(self) -> ComposeResult:
        yield Static(id="help-text")

    @property
    def is_open(self) -> bool:
        return bool(self.display)

    def open(
        self, number: int, step: StepText, record: StepRecord | None, blocked: str | None
    ) -> None:
        self.border_title = f"Step {number}: {step.title}"
        self.query_one("#help-text", Static).update(help_text(step, record, blocked))
        self.scroll_home(animate=False)
        self.display = True

    def close(self) -> None:
        self.display = False
