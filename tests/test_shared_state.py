"""One state for the whole host: a system install (`init` as root) names the state folder in
the runbook (`state_dir`), owned by root, group `preskool-dr`, 2750; the weekly
restore-test run as root records its result there group-readable, and `check` run as the
monitoring user (another uid, in that group) sees it: WARNING when it is missing or stale,
whoever runs it. The state-folder safety check trusts root's folder, never another user's."""

from __future__ import annotations

import grp
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.events import utcnow
from preskool_dr.core.base.paths import secure_dir, state_modes
from preskool_dr.core.base.site_init import InitReport, ensure_system_group
from preskool_dr.core.drill.append import append_entry
from preskool_dr.core.drill.entry import DRILL_FIELDS
from preskool_dr.core.restore.test_record import record_restore_test_result
from tests.support.checks import check_line
from tests.support.cli import run_cli, run_cli_as, run_python_as
from tests.support.db import Database

NOBODY = 65534  # the monitoring user stand-in: not root, owns nothing here


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def host_root() -> Iterator[Path]:
    """A folder every user can reach (pytest's tmp_path is under a 0700 folder of root's),
    standing in for / on a fresh host: etc/, backups/ and state/ are made inside."""
    if os.geteuid() != 0:
        pytest.skip("a system install is made by root")
    folder = Path(tempfile.mkdtemp(prefix="preskool-host-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def root_env(dr_env: dict[str, str], runbook: Path) -> dict[str, str]:
    """What root's cron job sees: the database, the runbook; no state or backup override."""
    env = {k: v for k, v in os.environ.items() if k not in ("BACKUP_DIR", "PRESKOOL_DR_STATE_DIR")}
    return env | {"PRESKOOL_DR_RUNBOOK": str(runbook)}


def monitoring_env(dr_env: dict[str, str]) -> dict[str, str]:
    """What the Nagios user has: PATH, the database's address, no state, no password."""
    keep = ("PATH", "LANG", "DB_HOST", "DB_PORT", "DB_NAME", "DB_USER")
    return {k: os.environ[k] for k in keep if k in os.environ}


def check_as(gid_groups: list[int], runbook: Path, env: dict[str, str]) -> tuple[int, list[str]]:
    done = run_cli_as(NOBODY, NOBODY, gid_groups, "--runbook", str(runbook), "check", env=env)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout.splitlines()


@pytest.mark.slow
def test_root_restore_test_counts_for_check_run_as_the_monitoring_user(
    dr_env: dict[str, str], database: Database, host_root: Path
) -> None:
    runbook, state, backups = (
        host_root / "etc" / "runbook.yaml",
        host_root / "state",
        host_root / "b",
    )
    made = run_cli(
        "init", "--path", str(runbook), "--backup-dir", str(backups), "--state-dir", str(state),
        env=root_env(dr_env, runbook),
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    group = grp.getgrnam("preskool-dr")
    assert (state.stat().st_uid, state.stat().st_gid, mode(state)) == (0, group.gr_gid, 0o2750)
    assert f"state_dir: {state}" in runbook.read_text()
    env = root_env(dr_env, runbook)
    backed_up = run_cli("backup", "--no-upload", env=env)
    assert backed_up.returncode == 0, backed_up.stdout + backed_up.stderr

    # Nothing recorded yet: a WARNING for the monitoring user too, naming where it looked.
    code, lines = check_as([group.gr_gid], runbook, monitoring_env(dr_env))
    record = state / "restore-test" / "last.json"
    assert code >= 1
    assert check_line(lines, "restore_test").startswith(
        f"WARNING  restore_test: Restore test never run: no record in {record}"
    )

    tested = run_cli("restore-test", env=env)  # root's Sunday 03:00 job
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert (record.stat().st_gid, mode(record)) == (group.gr_gid, 0o640)  # never world-readable
    assert mode(record.parent) & 0o777 == 0o750 and record.parent.stat().st_gid == group.gr_gid

    # A drill recorded by root: its log (and check's mark of it) readable by the group.
    fields: dict[str, object] = dict.fromkeys(DRILL_FIELDS)
    fields.update(performed_by="alice", result="pass")
    log = append_entry(state / "drill-log.jsonl", fields, signer="alice", key=None).path
    assert (log.stat().st_gid, mode(log)) == (group.gr_gid, 0o640)

    code, lines = check_as([group.gr_gid], runbook, monitoring_env(dr_env))
    assert check_line(lines, "restore_test").startswith(
        "OK       restore_test: restore test passed"
    )
    assert check_line(lines, "drill_log").startswith("OK       drill_log: ")
    assert "the mark is kept by root's check" in check_line(lines, "drill_log")
    assert "UNKNOWN" not in lines[0] and "Permission denied" not in "\n".join(lines)
    as_root = run_cli("check", env=env)  # the scheduled check (root) keeps the mark, 0640
    assert "drill_log: " in as_root.stdout
    assert mode(state / "drill-log-seen.json") == 0o640

    # A user outside the group reads neither the backups nor the state: never OK.
    code, lines = check_as([], runbook, monitoring_env(dr_env))
    assert code == 3 and lines[0].startswith("PRESKOOL_DR UNKNOWN - cannot read backup directory")

    # Stale (older than thresholds.restore_test_max_age_days): WARNING for everyone.
    data = json.loads(record.read_text())
    record_restore_test_result(
        state, ok=True, backup=data["backup"], detail=data["detail"],
        finished_at=utcnow() - timedelta(days=9),
    )  # fmt: skip
    code, lines = check_as([group.gr_gid], runbook, monitoring_env(dr_env))
    assert code >= 1
    assert check_line(lines, "restore_test").startswith(
        "WARNING  restore_test: Restore test stale: last passed 9.0 d ago"
    )


def test_state_folder_check_trusts_root_and_refuses_another_user(host_root: Path) -> None:
    shared = host_root / "shared"
    shared.mkdir(mode=0o750)
    group = grp.getgrnam("preskool-dr").gr_gid
    os.chown(shared, 0, group)
    shared.chmod(0o2750)
    assert state_modes(shared) == (0o750, 0o640)
    program = (
        "import sys; from pathlib import Path\n"
        "from preskool_dr.core.base.paths import secure_dir\n"
        "try:\n"
        f"    secure_dir(Path({str(shared)!r}), follow_symlink=True)\n"
        "except Exception as exc:\n"
        "    sys.exit(str(exc))\n"
    )
    # the monitoring user trusts root's group-readable folder
    as_monitoring = run_python_as(NOBODY, NOBODY, [group], "-c", program, env={})
    assert as_monitoring.returncode == 0, as_monitoring.stderr

    someone_elses = host_root / "theirs"
    someone_elses.mkdir(mode=0o750)
    os.chown(someone_elses, NOBODY, NOBODY)
    with pytest.raises(DrError, match=r"belongs to nobody, not to root"):
        secure_dir(someone_elses, follow_symlink=True)
    assert secure_dir(shared, follow_symlink=True) == shared  # root's own, group-readable


def test_private_state_folder_keeps_private_modes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    state.chmod(0o700)
    assert state_modes(state) == (0o700, 0o600)
    path = record_restore_test_result(state, ok=True, backup="b", detail="d")
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    state.chmod(0o755)  # open to others: not "shared with a group", stays private
    assert state_modes(state) == (0o700, 0o600)


def test_init_creates_the_system_group_when_missing() -> None:
    if os.geteuid() != 0 or shutil.which("groupdel", path="/usr/sbin:/sbin") is None:
        pytest.skip("needs root and groupadd/groupdel")
    name = f"pdr-test-{os.getpid()}"
    report = InitReport()
    try:
        gid = ensure_system_group(report, name)
        assert gid is not None and grp.getgrnam(name).gr_gid == gid
        assert report.done == [f"created the system group {name} (gid {gid})"]
        assert ensure_system_group(InitReport(), name) == gid  # there: left as it is
    finally:
        groupdel = shutil.which("groupdel", path="/usr/sbin:/sbin")
        assert groupdel is not None
        os.spawnv(os.P_WAIT, groupdel, [groupdel, name])


def test_runbook_state_dir_is_read_relative_and_the_environment_wins(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    from preskool_dr.core.base.config import load_config
    from preskool_dr.core.base.runbook_file import shipped_runbook_path

    runbook = tmp_path / "etc" / "runbook.yaml"
    runbook.parent.mkdir()
    text = shipped_runbook_path().read_text() + "state_dir: shared-state\n"
    runbook.write_text(text)
    line = text.count("\n")
    assert load_config(runbook, env={}).state_dir == tmp_path / "etc" / "shared-state"
    own = str(tmp_path / "mine")
    assert load_config(runbook, env={"PRESKOOL_DR_STATE_DIR": own}).state_dir == Path(own)

    env = {k: v for k, v in os.environ.items() if k != "PRESKOOL_DR_STATE_DIR"}
    shown = run_cli("--runbook", str(runbook), "config", "check", env=env)
    assert shown.returncode == 0, shown.stderr
    (setting,) = [ln for ln in shown.stdout.splitlines() if ln.startswith("state_dir ")]
    assert setting.split()[1:] == [
        str(tmp_path / "etc" / "shared-state"),
        "file",
        "line",
        str(line),
    ]
    overridden = run_cli(
        "--runbook", str(runbook), "config", "check", env=env | {"PRESKOOL_DR_STATE_DIR": own}
    )
    (setting,) = [ln for ln in overridden.stdout.splitlines() if ln.startswith("state_dir ")]
    assert f"not the runbook's state_dir, line {line}" in setting


def test_a_user_who_cannot_write_roots_state_is_told_to_use_sudo(host_root: Path) -> None:
    state = host_root / "state"
    state.mkdir()
    group = grp.getgrnam("preskool-dr").gr_gid
    os.chown(state, 0, group)
    state.chmod(0o2750)
    program = (
        "import sys; from pathlib import Path\n"
        "from preskool_dr.core.base.paths import secure_state_subdir\n"
        "try:\n"
        f"    secure_state_subdir(Path({str(state / 'runs')!r}))\n"
        "except Exception as exc:\n"
        "    sys.exit(str(exc))\n"
    )
    refused = run_python_as(NOBODY, NOBODY, [group], "-c", program, env={})
    assert refused.returncode == 1
    assert f"cannot create the state folder {state / 'runs'}: Permission denied" in refused.stderr
    assert "run this as root (sudo preskool-dr ...)" in refused.stderr
