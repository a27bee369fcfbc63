"""The nine steps of a restore, by id, in the runbook's order (step 1 is APP_OFFLINE).

Their titles and explanations are the runbook's (`steps:` in runbook.yaml, config.StepText):
the operator may reword them, never reorder or rename them. Each id is a `str`, so the run
journals and the events keep the plain names ("verify") they always had.
"""

from __future__ import annotations

from enum import StrEnum


class StepId(StrEnum):
    APP_OFFLINE = "app_offline"
    IDENTIFY = "identify"
    DOWNLOAD = "download"
    VERIFY = "verify"
    RECREATE_DB = "recreate_db"
    RESTORE = "restore"
    MIGRATE = "migrate"
    APP_ONLINE = "app_online"
    HEALTH = "health"

    @classmethod
    def known(cls, text: str) -> StepId | None:
        """The step named `text`, or None when no step has that id."""
        try:
            return cls(text)
        except ValueError:
            return None


# "app_offline, identify, ...": the ids in order, for messages
STEP_ID_LIST = ", ".join(StepId)
