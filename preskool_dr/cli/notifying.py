"""Which moments of a CLI command are notification events (core/base/notify.py sends them).

The core reports plain events to a callback; the commands wrap that callback here, so the
engine itself never knows anyone is notified. A delivery that fails prints one `[WARN]`
line and the command goes on with its own exit code.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

from preskool_dr.cli.output import tagged
from preskool_dr.core.base.events import Event, EventSink, Notice, StepChanged, StepStatus
from preskool_dr.core.base.notify import Notifier
from preskool_dr.core.base.settings import Config

if TYPE_CHECKING:  # `check` and `backup` notify too: they never load the restore engine
    from preskool_dr.core.restore.engine import Engine


def notifier(config: Config, stream: TextIO | None = None) -> Notifier:
    """The runbook's notifier; its warnings are `[WARN]` lines on `stream` (stdout)."""

    def warn(event: Event) -> None:
        if isinstance(event, Notice):
            tagged("WARN", event.text, stream or sys.stdout)

    return Notifier.from_config(config, on_event=warn)


class RestoreNotices:
    """The restore's event sink: passes every event on, and notifies a failed step."""

    def __init__(self, config: Config, forward: EventSink) -> None:
        from preskool_dr.core.restore.notices import RestoreNotifications

        self.notifier = notifier(config)
        self.notifications = RestoreNotifications(self.notifier)
        self.forward = forward
        self.engine: Engine | None = None  # set once the run exists: its id names it

    def __call__(self, event: Event) -> None:
        self.forward(event)
        if isinstance(event, StepChanged) and event.status is StepStatus.FAILED:
            self.notifications.step_failed(event, self.engine.state if self.engine else None)

    def started(self, engine: Engine, *, resumed: bool = False) -> None:
        self.engine = engine
        self.notifications.started(engine.state, resumed=resumed)

    def finished(self, engine: Engine, outcome: str) -> None:
        """`outcome`: the RESULT line's RTO and RPO text."""
        self.notifications.finished(engine.state, outcome)
