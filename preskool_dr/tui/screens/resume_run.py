"""Unfinished runs found in the journal: resume one, or (asked twice) start a new one.

Each run says where it stopped and when, what comes next and which aside copy it keeps, so
the operator can tell the run they mean at 3 a.m. Esc leaves without changing anything: a
new run, which leaves these runs (and their aside copies) behind, is an explicit choice
confirmed by a second question."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from preskool_dr.core.base.events import StepStatus
from preskool_dr.core.restore.journal import RunState, StepRecord
from preskool_dr.tui.format import STATUS_ICONS

NEW_RUN = "__new__"  # what the offer dismisses with for a confirmed new run
LEAVE = "__leave__"  # Esc: quit, nothing changed


def ago(then: datetime, now: datetime) -> str:
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 60:
        return f"{seconds} s ago"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min ago"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min ago"
    return f"{hours // 24} days ago"


def last_activity(state: RunState) -> datetime:
    times = [t for r in state.steps for t in (r.started_at, r.finished_at) if t is not None]
    return max(times, default=state.created_at)


def stopped_at(state: RunState) -> StepRecord | None:
    """The step the run stopped in (failed or left running), if any."""
    return next(
        (r for r in state.steps if r.status in (StepStatus.FAILED, StepStatus.RUNNING)), None
    )


def next_step(state: RunState) -> StepRecord | None:
    return next(
        (r for r in state.steps if r.status not in (StepStatus.DONE, StepStatus.SKIPPED)), None
    )


def how_it_ended(state: RunState, alive: bool) -> str:
    """The journal says "running" for a process that was killed: say what is true."""
    if state.result == "running":
        return "running now (its process holds the lock)" if alive else "stopped"
    return state.result


def where_it_stopped(state: RunState) -> str:
    record = stopped_at(state)
    if record is None:
        done = [r for r in state.steps if r.status is StepStatus.DONE]
        return f"after {done[-1].number} {done[-1].title}" if done else "before any step"
    if record.id == "restore":
        what = "partial load"
    elif record.status is StepStatus.RUNNING:
        what = "was running"
    else:
        what = "interrupted" if "interrupted" in record.detail else "failed"
    return f"at {record.number} {record.title} ({what})"


def run_summary(state: RunState, now: datetime, *, alive: bool = False) -> Text:
    """Four short lines (they fit an 80-column dialog): the run, how and where it stopped
    and what is next, its steps and backup, who ran it and its aside copy."""
    icons = "".join(STATUS_ICONS[r.status] for r in state.steps)
    upcoming = next_step(state)
    text = Text()
    text.append(f"run {state.run_id}", style="bold")
    text.append(f" · {state.mode} {state.target_label}\n")
    text.append(f"  {how_it_ended(state, alive)} {ago(last_activity(state), now)} ")
    text.append(where_it_stopped(state))
    text.append(f"; next: {upcoming.number}" if upcoming else "", style="bold")
    text.append(f"\n  {icons}  ")
    text.append(state.backup.name if state.backup else "no backup chosen")
    text.append(f"\n  by {state.operator}")
    if state.aside_db and state.aside_state == "renamed":
        text.append(f"; aside copy {state.aside_db}")
    return text


class ResumeRunScreen(ModalScreen[str]):
    """Dismisses with the run id to resume, NEW_RUN (confirmed) or LEAVE (Esc)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "leave", "Quit", id="resume-leave"),
        Binding("n", "new_run", "New run…", id="resume-new"),
    ]

    def __init__(self, runs: list[RunState], now: datetime, alive: set[str]) -> None:
        super().__init__()
        self.runs = runs
        self.now = now
        self.alive = alive  # run ids whose process still holds the run's lock

    def compose(self) -> ComposeResult:
        with Vertical(id="resume-dialog", classes="dialog") as dialog:
            dialog.border_title = "Unfinished restore runs"
            yield Static(
                "Resume a run where it stopped (✔ done ▶ running ✖ failed ↷ skipped · pending)."
            )
            options = [
                Option(run_summary(s, self.now, alive=s.run_id in self.alive), id=s.run_id)
                for s in self.runs
            ]
            options.append(Option("Start a new run instead…", id=NEW_RUN))
            yield OptionList(*options, id="resume-list")
            yield Static("Enter resumes · n new run… · Esc quits", classes="dialog-keys")

    @on(OptionList.OptionSelected, "#resume-list")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        if event.option.id == NEW_RUN:
            self.action_new_run()
        elif event.option.id:
            self.dismiss(event.option.id)

    def action_new_run(self) -> None:
        def answered(sure: bool | None) -> None:
            if sure:
                self.dismiss(NEW_RUN)

        self.app.push_screen(NewRunScreen(self.runs), answered)

    def action_leave(self) -> None:
        self.dismiss(LEAVE)


class NewRunScreen(ModalScreen[bool]):
    """The second question: a new run leaves the unfinished ones (and their aside copies)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "New run", id="new-run-yes"),
        Binding("n,escape", "answer(False)", "Back", id="new-run-no"),
    ]

    def __init__(self, runs: list[RunState]) -> None:
        super().__init__()
        self.runs = runs

    def compose(self) -> ComposeResult:
        left = "\n".join(
            f"  run {s.run_id}"
            + (f"\n    its aside copy {s.aside_db} is kept" if s.aside_db else "")
            for s in self.runs
        )
        with Vertical(id="new-run-dialog", classes="dialog -warning") as dialog:
            dialog.border_title = "Start a new run?"
            yield Static(f"These runs stay unfinished:\n{left}")
            yield Static(
                "Resume one later by starting preskool-dr again, or with "
                "`preskool-dr restore --resume RUN_ID`."
            )
            yield Static("y starts a new run · n or Esc goes back", classes="dialog-keys")

    def action_answer(self, sure: bool) -> None:
        self.dismiss(sure)
