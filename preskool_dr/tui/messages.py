"""Messages to the screens: what the engine's callback posts (from whatever thread runs a
step), and what each of the App's workers reports when it is done."""

from __future__ import annotations

from textual.message import Message

from preskool_dr.core.base.database import Snapshot
from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.events import LogLine, Notice, Progress, StepChanged
from preskool_dr.core.pitr.journal import PitrState
from preskool_dr.core.restore.journal import StepRecord
from preskool_dr.core.storage.catalog import BackupRecord


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


# ---------------------------------------------------------------- what workers report
# A worker of the App returns one of these; once the worker has finished (so the engine is
# no longer busy) the App posts it to the screen that shows the run, after the engine events
# the work posted on the way.


class RunOpened(Message):
    """A run was started with a backup, or another backup was chosen for it."""


class RunResumed(Message):
    """An unfinished run was taken up again from its journal."""


class StepFinished(Message):
    """A step ran to its end (done or failed: the record says which)."""

    def __init__(self, record: StepRecord) -> None:
        super().__init__()
        self.record = record


class RunChanged(Message):
    """The aside copy was dropped, or the run rolled back."""


class DestructionPreviewed(Message):
    """What step 5 would replace, or why the server could not tell."""

    def __init__(self, preview: Snapshot | str) -> None:
        super().__init__()
        self.preview = preview


class BackupsListed(Message):
    """The local and S3 catalog, with a line saying where it looked, and what could not be
    listed or read (each also a line of the log)."""

    def __init__(self, records: list[BackupRecord], note: str, warnings: list[str]) -> None:
        super().__init__()
        self.records = records
        self.note = note
        self.warnings = warnings


class GlacierRestoreRequested(Message):
    """S3 accepted (or already had) a restore request: its answer."""

    def __init__(self, answer: str) -> None:
        super().__init__()
        self.answer = answer


class WorkFailed(Message):
    """A worker raised: `source` names the work for the log."""

    def __init__(self, source: str, error: BaseException | None) -> None:
        super().__init__()
        self.source = source
        self.error = error


class PitrEnded(Message):
    """A point-in-time recovery is over: its state (None when refused before anything
    started) and, when it did not reach the target, why."""

    def __init__(self, state: PitrState | None, error: DrError | None) -> None:
        super().__init__()
        self.state = state
        self.error = error
