"""The restore engine's gate (`why_blocked`): which of the nine steps may run, given only the
run's journal record. Pure: no PostgreSQL, no files."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from preskool_dr.core.base.events import StepStatus
from preskool_dr.core.base.steps import StepId
from preskool_dr.core.restore.engine import HEADLESS_ORDER, why_blocked
from preskool_dr.core.restore.journal import RunState, StepRecord

AT = datetime(2026, 2, 20, 4, 0, tzinfo=UTC)


def run_with(**statuses: StepStatus) -> RunState:
    steps = [
        StepRecord(id=s, number=i, title=s.value, status=statuses.get(s.value, StepStatus.PENDING))
        for i, s in enumerate(StepId, 1)
    ]
    return RunState(
        run_id="20260220-040000-abcd",
        mode="restore",
        operator="ops",
        tool_host="dr-host",
        db_host="localhost",
        db_port=5432,
        target_db="school",
        recreate_mode="aside",
        incident_declared_at=AT,
        created_at=AT,
        steps=steps,
    )


DONE, SKIPPED, FAILED, RUNNING = (
    StepStatus.DONE,
    StepStatus.SKIPPED,
    StepStatus.FAILED,
    StepStatus.RUNNING,
)
CHECKED = {"identify": DONE, "download": DONE, "verify": DONE}


def test_a_new_run_may_identify_and_take_the_app_offline_only() -> None:
    state = run_with()
    free = [s for s in StepId if why_blocked(state, s) is None]
    assert free == [StepId.APP_OFFLINE, StepId.IDENTIFY]
    assert why_blocked(state, StepId.VERIFY) == "step 2 (identify) is not done yet"


@pytest.mark.parametrize("step", [StepId.RECREATE_DB, StepId.RESTORE])
def test_steps_5_and_6_need_the_backup_checks_done_not_skipped(step: StepId) -> None:
    # settled is not enough: a backup check marked skipped (by hand) keeps 5 and 6 shut
    state = run_with(
        identify=DONE, download=SKIPPED, verify=DONE, app_offline=DONE, recreate_db=FAILED
    )
    assert why_blocked(state, step) == "step 3 (download) must pass first"


def test_step_5_waits_for_the_app_to_be_offline_or_skipped() -> None:
    assert why_blocked(run_with(**CHECKED), StepId.RECREATE_DB) == (
        "step 1 (app_offline) is not done yet"
    )
    assert why_blocked(run_with(**CHECKED, app_offline=SKIPPED), StepId.RECREATE_DB) is None


def test_a_done_step_5_or_6_is_never_run_again_but_a_failed_one_is() -> None:
    state = run_with(**CHECKED, app_offline=DONE, recreate_db=DONE, restore=FAILED)
    assert why_blocked(state, StepId.RECREATE_DB) == (
        "it is done; start a new run to restore again"
    )
    assert why_blocked(state, StepId.RESTORE) is None
    assert why_blocked(state, StepId.MIGRATE) == "step 6 (restore) is not done yet"


def test_a_running_step_or_a_finished_run_blocks() -> None:
    assert why_blocked(run_with(identify=RUNNING), StepId.IDENTIFY) == "it is running"
    state = run_with(**CHECKED)
    state.result = "rolled-back"
    assert why_blocked(state, StepId.APP_OFFLINE) == "the run is rolled-back"


def test_the_app_comes_back_after_the_restore_and_the_migrations() -> None:
    loaded = {**CHECKED, "app_offline": DONE, "recreate_db": DONE, "restore": DONE}
    assert why_blocked(run_with(**loaded), StepId.APP_ONLINE) == (
        "step 7 (migrate) is not done yet"
    )
    assert why_blocked(run_with(**loaded, migrate=SKIPPED), StepId.APP_ONLINE) is None
    assert why_blocked(run_with(**loaded, migrate=DONE), StepId.HEALTH) == (
        "step 8 (app_online) is not done yet"
    )


def test_headless_order_checks_the_backup_before_any_downtime() -> None:
    assert sorted(HEADLESS_ORDER) == sorted(StepId)
    assert HEADLESS_ORDER.index(StepId.VERIFY) < HEADLESS_ORDER.index(StepId.APP_OFFLINE)
