"""Under the checklist: what the selected step does, its exact command, why it cannot run."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from preskool_dr.core.base.events import StepStatus
from preskool_dr.core.base.settings import StepText
from preskool_dr.core.restore.journal import StepRecord


class StepInfo(Static):
    def show(
        self,
        number: int,
        step: StepText,
        record: StepRecord | None,
        blocked: str | None,
        live: str | None = None,
        ways: str | None = None,
    ) -> None:
        """`live`: what the running step is doing now (step 9's tries); `ways`: the keys
        that go on from a failed step ("R retry · u roll back")."""
        # What stops the operator comes first: at 80x24 the last lines may be cut off.
        text = Text()
        text.append(f"Step {number}: {step.title}\n", style="bold")
        if ways:  # before the failure's text, which may be long
            text.append(ways + "\n", style="bold")
        running = record is not None and record.status is StepStatus.RUNNING
        if blocked and not running:
            text.append(f"blocked: {blocked}\n", style="bold")
        if record is not None and record.status is not StepStatus.PENDING:
            detail = record.detail if record.detail != record.status.value else ""
            text.append(f"{record.status.value}: {detail}".rstrip(": ") + "\n")
            if live and running:
                text.append(live + "\n", style="bold")
        elif record is not None and record.detail:
            text.append(record.detail + "\n")
        text.append(step.explain + "\n")
        text.append("$ " + step.command, style="italic")
        self.update(text)
