"""Run journals on disk, restore and PITR alike: what is saved loads back the same, the
JSON keeps its field names, and planted or foreign files are refused. Pure: no PostgreSQL."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from preskool_dr.core.base.errors import DrError, NotFoundError
from preskool_dr.core.base.events import StepStatus
from preskool_dr.core.base.steps import StepId
from preskool_dr.core.pitr.run import STEPS, PitrJournal, PitrState
from preskool_dr.core.restore.journal import (
    BackupChoice,
    Journal,
    RunState,
    StepRecord,
    VerifyRecord,
    new_run_id,
)
from preskool_dr.core.storage.checksum import FileIdentity

AT = datetime(2026, 2, 20, 4, 12, 33, 123456, tzinfo=UTC)


def restore_state() -> RunState:
    steps = [StepRecord(id=s, number=i, title=s.value.title()) for i, s in enumerate(StepId, 1)]
    steps[1].status = StepStatus.DONE
    steps[1].started_at, steps[1].finished_at = AT, AT + timedelta(seconds=2)
    steps[3].status = StepStatus.FAILED
    steps[3].output = ["line one", "line two"]
    return RunState(
        run_id=new_run_id(AT),
        mode="drill",
        operator="ops",
        tool_host="dr-host",
        db_host="/run/postgresql",
        db_port=5433,
        target_db="school",
        recreate_mode="aside",
        incident_declared_at=AT - timedelta(hours=1),
        created_at=AT,
        steps=steps,
        backup=BackupChoice(
            spec="latest",
            name="school-20260220.sql.gz",
            time=AT - timedelta(hours=3),
            local_path="/backups/school-20260220.sql.gz",
            md5="0" * 32,
            identity=FileIdentity(dev=1, ino=2, size=3, mtime_ns=4, ctime_ns=5),
        ),
        verify=VerifyRecord(expected_md5="0" * 32, actual_md5="1" * 32, md5_ok=False, gzip_ok=True),
        destroyed={"database": "school", "existed": True, "row_estimates": {"pupils": 12}},
        validation=[{"name": "required tables", "ok": True, "detail": "3 present"}],
        notes=["resumed by pid 7"],
    )


def pitr_state() -> PitrState:
    return PitrState(
        run_id=new_run_id(AT),
        created_at=AT,
        operator="ops",
        target=AT - timedelta(minutes=5),
        incident=AT - timedelta(minutes=4),
        data_dir="/srv/recovered",
        port=55432,
        base_backup="base-20260220T010000Z",
        range_start=AT - timedelta(days=1),
        range_end=None,
        server_log="/srv/recovered/pitr-recovery.log",
        steps={sid: "done" if sid == "plan" else "pending" for sid, _ in STEPS},
        details={"plan": "target 2026-02-20T04:07:33Z"},
        stop_point=AT - timedelta(minutes=4, seconds=59),
        step_seconds={"plan": 0.5},
        validation=[{"name": "smoke", "ok": True, "detail": "1 row"}],
    )


def test_a_restore_run_loads_back_as_it_was_saved(tmp_path: Path) -> None:
    state = restore_state()
    journal = Journal(tmp_path / "state")
    path = journal.save(state)

    assert path == tmp_path / "state" / "runs" / f"{state.run_id}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = journal.load(state.run_id)
    assert loaded == state
    assert all(type(r.id) is StepId for r in loaded.steps)
    assert journal.runs() == [state] and journal.unfinished() == [state]


def test_a_restore_journal_keeps_its_json_names(tmp_path: Path) -> None:
    """Scripts and older versions read these files: plain step ids, UTC times with a Z."""
    state = restore_state()
    data = json.loads(Journal(tmp_path).save(state).read_text())
    assert [s["id"] for s in data["steps"]] == [s.value for s in StepId]
    assert data["steps"][1]["status"] == "done"
    assert data["steps"][1]["started_at"] == "2026-02-20T04:12:33.123456Z"
    assert data["created_at"] == "2026-02-20T04:12:33.123456Z"
    assert data["backup"]["identity"] == {
        "dev": 1,
        "ino": 2,
        "size": 3,
        "mtime_ns": 4,
        "ctime_ns": 5,
    }
    assert data["verify"]["md5_ok"] is False and data["version"] == 1
    assert data["destroyed"]["row_estimates"] == {"pupils": 12}


def test_a_restore_journal_from_a_newer_version_still_loads(tmp_path: Path) -> None:
    state = restore_state()
    journal = Journal(tmp_path)
    path = journal.save(state)
    data = json.loads(path.read_text())
    data["written_by_a_newer_version"] = {"x": 1}
    data["steps"][0]["also_new"] = True
    path.write_text(json.dumps(data))
    assert journal.load(state.run_id) == state


@pytest.mark.parametrize(
    "damage",
    ["not json", "[1, 2]", "unknown step id", "eight steps", "missing field", "bad time"],
)
def test_a_damaged_restore_journal_is_unreadable_not_a_crash(tmp_path: Path, damage: str) -> None:
    state = restore_state()
    journal = Journal(tmp_path)
    path = journal.save(state)
    data = json.loads(path.read_text())
    if damage == "unknown step id":
        data["steps"][4]["id"] = "recreate"
    elif damage == "eight steps":
        del data["steps"][-1]
    elif damage == "missing field":
        del data["target_db"]
    elif damage == "bad time":
        data["created_at"] = 12
    text = {"not json": "{", "[1, 2]": "[1, 2]"}.get(damage, json.dumps(data))
    path.write_text(text)

    with pytest.raises(
        NotFoundError, match=r"is unreadable .*: it cannot be resumed; start a new run"
    ):
        journal.load(state.run_id)
    assert journal.runs() == []


def test_a_pitr_run_loads_back_as_it_was_saved(tmp_path: Path) -> None:
    state = pitr_state()
    journal = PitrJournal(tmp_path / "state")
    path = journal.save(state)

    assert path == tmp_path / "state" / "pitr" / f"{state.run_id}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert journal.load(state.run_id) == state
    data = json.loads(path.read_text())
    assert data["mode"] == "pitr" and data["range_end"] is None
    assert data["target"] == "2026-02-20T04:07:33.123456Z"
    assert data["steps"] == {sid: "done" if sid == "plan" else "pending" for sid, _ in STEPS}


def test_the_two_kinds_of_journal_do_not_take_each_others_files(tmp_path: Path) -> None:
    restore, pitr = restore_state(), pitr_state()
    Journal(tmp_path).save(restore)
    PitrJournal(tmp_path).save(pitr)
    foreign = tmp_path / "pitr" / f"{restore.run_id}.json"
    foreign.write_text((tmp_path / "runs" / f"{restore.run_id}.json").read_text())
    foreign.chmod(0o600)

    with pytest.raises(NotFoundError, match="not a pitr journal"):
        PitrJournal(tmp_path).load(restore.run_id)
    assert Journal(tmp_path).runs() == [restore]


@pytest.mark.parametrize("kind", [Journal, PitrJournal])
def test_a_symlink_at_a_journal_path_is_refused_on_save_and_load(
    tmp_path: Path, kind: type[Journal] | type[PitrJournal]
) -> None:
    state = restore_state() if kind is Journal else pitr_state()
    journal = kind(tmp_path / "state")
    path = journal.save(state)  # type: ignore[arg-type]
    victim = tmp_path / "victim.json"
    planted = path.read_bytes()
    victim.write_bytes(planted)
    path.unlink()
    path.symlink_to(victim)
    state.operator = "someone else"

    with pytest.raises(DrError, match=rf"the {kind.what} .* is a symbolic link"):
        journal.load(state.run_id)
    with pytest.raises(DrError, match="is a symbolic link"):
        journal.save(state)  # type: ignore[arg-type]
    assert victim.read_bytes() == planted and path.is_symlink()


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        (Journal, "is not a run id (see `preskool-dr restore --list-runs`)"),
        (PitrJournal, "is not a pitr run id (the journals are in"),
    ],
)
@pytest.mark.parametrize("run_id", ["../../etc/passwd", ".hidden", "", "20260220-041233-a1b2\n"])
def test_only_a_run_id_names_a_journal(
    tmp_path: Path, kind: type[Journal] | type[PitrJournal], words: str, run_id: str
) -> None:
    with pytest.raises(NotFoundError) as info:
        kind(tmp_path).load(run_id)
    assert words in str(info.value)


def test_a_missing_run_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"no run '20200101-000000-abcd' in .*--list-runs"):
        Journal(tmp_path).load("20200101-000000-abcd")
    with pytest.raises(NotFoundError, match=r"no pitr run '20200101-000000-abcd' in .*pitr"):
        PitrJournal(tmp_path).load("20200101-000000-abcd")
