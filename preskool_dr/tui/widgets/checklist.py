"""The nine steps, always visible: icon, number, title, elapsed time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import ClassVar

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from preskool_dr.core.base.events import StepStatus
from preskool_dr.core.base.settings import StepText
from preskool_dr.core.restore.journal import StepRecord
from preskool_dr.tui.format import STATUS_ICONS, clock


class Checklist(Widget, can_focus=True):
    """Steps in the runbook's numbering; the selected one is what `r`, `s` and `?` act on."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "move(-1)", "Previous step", show=False),
        Binding("down,j", "move(1)", "Next step", show=False),
        Binding("home", "jump(0)", "First step", show=False),
        Binding("end", "jump(8)", "Last step", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "checklist--pending",
        "checklist--running",
        "checklist--done",
        "checklist--failed",
        "checklist--skipped",
        "checklist--selected",
        "checklist--current",
    }

    selected: reactive[int] = reactive(0)

    class Selected(Message):
        """The operator moved to another step."""

        def __init__(self, step_id: str) -> None:
            super().__init__()
            self.step_id = step_id

    def __init__(
        self,
        steps: tuple[StepText, ...],
        now: Callable[[], datetime],
        *,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.steps = steps
        self.now = now
        self.records: list[StepRecord] = []
        self.current: str | None = None

    @property
    def selected_id(self) -> str:
        return self.steps[self.selected].id

    def show(self, records: list[StepRecord], current: str | None) -> None:
        """Redraw from the run's records; `current` is the step the run is at."""
        self.records = records
        self.current = current
        self.refresh()

    def select(self, step_id: str) -> None:
        for index, step in enumerate(self.steps):
            if step.id == step_id:
                self.selected = index

    def status(self, index: int) -> StepStatus:
        return self.records[index].status if index < len(self.records) else StepStatus.PENDING

    def elapsed(self, index: int) -> str:
        if index >= len(self.records):
            return ""
        record = self.records[index]
        if record.started_at is None or record.status is StepStatus.PENDING:
            return ""
        end = record.finished_at or self.now()
        return clock((end - record.started_at).total_seconds())

    def render(self) -> RenderableType:
        grid = Table.grid(expand=True)
        grid.add_column(no_wrap=True, width=1)
        grid.add_column(no_wrap=True, ratio=1, overflow="ellipsis")
        grid.add_column(no_wrap=True, justify="right")
        for index, step in enumerate(self.steps):
            status = self.status(index)
            style = self.get_component_rich_style(f"checklist--{status.value}", partial=True)
            if step.id == self.current:
                style += self.get_component_rich_style("checklist--current", partial=True)
            if index == self.selected:
                style += self.get_component_rich_style("checklist--selected", partial=True)
            pointer = "›" if index == self.selected else " "
            label = Text(f"{STATUS_ICONS[status]} {index + 1} {step.title}")
            grid.add_row(pointer, label, self.elapsed(index), style=style)
        return grid

    def watch_selected(self, selected: int) -> None:
        self.refresh()
        self.post_message(self.Selected(self.selected_id))

    def action_move(self, delta: int) -> None:
        self.selected = (self.selected + delta) % len(self.steps)

    def action_jump(self, index: int) -> None:
        self.selected = index

    def on_click(self, event: events.Click) -> None:
        if 0 <= event.y < len(self.steps):
            self.selected = event.y
