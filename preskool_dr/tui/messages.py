"""Messages the engine's callback posts to the App (from whatever thread runs a step)."""

from __future__ import annotations

from textual.message import Message

from preskool_dr.core.base.events import LogLine, Notice, Progress, StepChanged


class EngineEvent(Message):
    """A step transition, a line of child output or a notice: never dropped."""

    def __init__(self, event: StepChanged | LogLine | Notice) -> None:
        super().__init__()
        self.event = event


class EngineProgress(Message):
    """Bytes done of total. A newer one of the same step and phase replaces a queued older
    one, so a slow SSH link never drowns in redraws."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress

    def can_replace(self, message: Message) -> bool:
        # Textual asks the queued (older) message whether `message`, the next one, supersedes it.
        return (
            isinstance(message, EngineProgress)
            and message.progress.step_id == self.progress.step_id
            and message.progress.phase == self.progress.phase
        )
