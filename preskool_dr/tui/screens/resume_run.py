"""Unfinished runs found in the journal: resume one (its steps shown) or start a new one."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from preskool_dr.core.restore.journal import RunState
from preskool_dr.tui.format import STATUS_ICONS

NEW_RUN = "__new__"


def run_summary(state: RunState) -> Text:
    icons = "".join(STATUS_ICONS[r.status] for r in state.steps)
    backup = state.backup.name if state.backup else "no backup chosen"
    text = Text()
    text.append(f"run {state.run_id}", style="bold")
    text.append(f" · {state.mode} {state.target_label} · {state.result}\n")
    text.append(f"  {icons}  {backup} · by {state.operator}")
    return text


class ResumeRunScreen(ModalScreen[str | None]):
    """Dismisses with the run id to resume, or None for a new run."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "new_run", "New run", id="resume-new")
    ]

    def __init__(self, runs: list[RunState]) -> None:
        super().__init__()
        self.runs = runs

    def compose(self) -> ComposeResult:
        with Vertical(id="resume-dialog", classes="dialog") as dialog:
            dialog.border_title = "Unfinished restore runs"
            yield Static(
                "Resume a run where it stopped (✔ done ▶ running ✖ failed ↷ skipped · pending), "
                "or start a new one."
            )
            options = [Option(run_summary(s), id=s.run_id) for s in self.runs]
            options.append(Option("Start a new run", id=NEW_RUN))
            yield OptionList(*options, id="resume-list")
            yield Static("Enter chooses · Esc starts a new run", classes="dialog-keys")

    @on(OptionList.OptionSelected, "#resume-list")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        chosen = event.option.id
        self.dismiss(None if chosen in (None, NEW_RUN) else chosen)

    def action_new_run(self) -> None:
        self.dismiss(None)
