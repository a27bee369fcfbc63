"""The nine steps' actions; core/restore/engine.py decides when each may run.

| step | id          | module            |
|------|-------------|-------------------|
| 1    | app_offline | application.py    |
| 2    | identify    | backup_checks.py  |
| 3    | download    | backup_checks.py  |
| 4    | verify      | backup_checks.py  |
| 5    | recreate_db | recreate_db.py    |
| 6    | restore     | restore.py        |
| 7    | migrate     | application.py    |
| 8    | app_online  | application.py    |
| 9    | health      | application.py    |

Steps 5 and 6 pass the verify gate (verify_gate.py) first. Step 6's loader choice is
loader.py; a headless run starts that load as step 4 begins, or from S3 as soon as step 3
has the companion (early_load.py: it hashes the files it holds open itself, and step 6
takes it only when step 4 passed on those files). An action sees its run through
`context.StepRun`.
"""

from __future__ import annotations

from preskool_dr.core.base.steps import StepId
from preskool_dr.core.restore.steps import application, backup_checks, recreate_db, restore
from preskool_dr.core.restore.steps.context import StepAction

ACTIONS: dict[StepId, StepAction] = {
    StepId.APP_OFFLINE: application.app_offline,
    StepId.IDENTIFY: backup_checks.identify_again,
    StepId.DOWNLOAD: backup_checks.download,
    StepId.VERIFY: backup_checks.verify,
    StepId.RECREATE_DB: recreate_db.recreate_db,
    StepId.RESTORE: restore.restore,
    StepId.MIGRATE: application.migrate,
    StepId.APP_ONLINE: application.app_online,
    StepId.HEALTH: application.health,
}
