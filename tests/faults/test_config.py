"""Config and input: a malformed runbook.yaml, missing environment, unknown step ids, a damaged
run journal, bytes that are not UTF-8 in file names and in psql's output.

Guarantee: every runbook.yaml error is one line `<file>:<line>: <what is wrong>` pointing at
the offending line, exit 2, before anything runs; numbers that make no sense (a timeout of 0
or less, a port outside 1-65535, a negative retention, NaN, a "missing" alert before the
"late" one) are errors too, with the range that fits. Missing or wrong environment is named by
its variable. A run journal that is damaged or written for other steps is refused with its
path (exit 2), never half-resumed. File names and program output that are not UTF-8 are
shown as they are (undecodable bytes escaped or replaced), never a crash.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from preskool_dr.core.base.config import load_config
from preskool_dr.core.base.errors import UsageError
from preskool_dr.core.restore.engine import Engine, RunOptions
from preskool_dr.core.restore.journal import Journal
from tests.support.backups import backup_sql, insert_before, make_backup, rewrite_backup
from tests.support.checks import assert_says, the_error
from tests.support.cli import call_cli, cli_argv, run
from tests.support.runbook import REPO, write_runbook
from tests.support.site import Site

RUNBOOK = (REPO / "runbook.yaml").read_text()
NOW = datetime.now(UTC).replace(microsecond=0)


def line_of(text: str, fragment: str) -> int:
    """1-based line of the first line that starts with `fragment`."""
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith(fragment):
            return number
    raise AssertionError(f"{fragment!r} not in the runbook")


def changed(old: str, new: str) -> tuple[str, int]:
    assert old in RUNBOOK, old
    return RUNBOOK.replace(old, new, 1), line_of(RUNBOOK, old.splitlines()[0])


# Numbers of the right type that make no sense: each must be refused at its own line.
NONSENSE_NUMBERS = [
    ("timeout-zero", "  timeout_seconds: 300", "  timeout_seconds: 0",
     "app.timeout_seconds must be more than 0, got 0"),
    ("timeout-negative", "  timeout_seconds: 300", "  timeout_seconds: -5",
     "app.timeout_seconds must be more than 0, got -5"),
    ("health-wait-negative", "  timeout_seconds: 300\n",
     "  timeout_seconds: 300\n  health_wait_seconds: -1.5\n",
     "app.health_wait_seconds must be more than 0, got -1.5"),
    ("retention-negative", "    daily:      {local_days: 30", "    daily:      {local_days: -30",
     "backups.retention.daily.local_days must be 1 or more, got -30"),
    ("port-out-of-range", "  port: 5432\n", "  port: 70000\n",
     "database.port must be from 1 to 65535, got 70000"),
    ("compress-level", "  compress_level: 6", "  compress_level: 12",
     "backups.compress_level must be from 0 to 9 (gzip levels), got 12"),
    ("rto-not-a-number", "  rto_minutes: 120 ", "  rto_minutes: .nan ",
     "thresholds.rto_minutes must be a finite number, got nan"),
    ("memory-with-options", "  maintenance_work_mem: 512MB", "  maintenance_work_mem: 1GB -c fsync=off",
     "restore.maintenance_work_mem '1GB -c fsync=off': write a size such as 512MB"),
    ("memory-without-unit", "  maintenance_work_mem: 512MB", "  maintenance_work_mem: '512'",
     "restore.maintenance_work_mem '512': write a size such as 512MB"),
    ("missing-before-late", "  backup_missing_hours: 26 ", "  backup_missing_hours: 2 ",
     "thresholds.backup_missing_hours (2) must be at least thresholds.backup_warn_age_hours"),
]  # fmt: skip


def bad_runbooks() -> list[tuple[str, bytes, int, str]]:
    """(id, file bytes, expected line, expected text) for each way to break runbook.yaml."""
    cases: list[tuple[str, bytes, int, str]] = []

    def add(case: str, text: str, line: int, expected: str) -> None:
        cases.append((case, text.encode(), line, expected))

    text, line = changed("  port: 5432\n", "  port: [5432\n")
    add("unclosed-bracket", text, line + 1, f"flow sequence that starts on line {line}")
    text, line = changed("  port: 5432\n", "\tport: 5432\n")
    add("tab-indent", text, line, "invalid YAML")
    text, line = changed("  port: 5432\n", "  port: 5432\n  port: 5433\n")
    add("duplicate-key", text, line + 1, "duplicate key 'port'")
    text, line = changed("  port: 5432\n", "  port: five\n")
    add("wrong-type", text, line, "database.port must be a whole number, got text 'five'")
    text, line = changed("  port: 5432\n", "  prot: 5432\n")
    add("unknown-key", text, line, "unknown key database.prot")
    text, line = changed("  - id: migrate\n", "  - id: migrations\n")
    add("unknown-step-id", text, line, "unknown step id 'migrations'")
    text, _ = changed("  - id: migrate\n", "  - id: restore_again\n")
    text = text.replace("  - id: restore\n", "  - id: migrate\n", 1).replace(
        "  - id: restore_again\n", "  - id: restore\n", 1
    )
    add("steps-out-of-order", text, line_of(RUNBOOK, "  - id: restore"), "in order")
    text, line = changed("version: 1\n", "version: 2\n")
    add("version-2", text, line, "version 2 is not supported")
    text, line = changed(
        "  stop: [docker-compose, stop, frontend, backend]", "  stop: docker-compose stop"
    )
    add("argv-as-text", text, line, "app.stop must be a list")
    text, line = changed("  health_url: http://localhost:8000/api/v1/health", "  health_url: 8000")
    add("url-as-number", text, line, "app.health_url must be non-empty text")
    text, line = changed("  port: 5432\n", "  port: 5432\n  1: one\n")
    add("key-not-text", text, line + 1, "keys must be text")
    add("top-level-list", "- one\n- two\n", 1, "must be a mapping, got a list")
    add("empty-file", "", 1, "steps must list the nine steps")
    for case, old, new, expected in NONSENSE_NUMBERS:
        text, line = changed(old, new)
        add(case, text, line + new.count("\n") - old.count("\n"), expected)
    latin1 = RUNBOOK.replace("  admin_db: postgres", "  admin_db: caf\xe9", 1)
    cases.append(
        ("not-utf8", latin1.encode("latin-1"), line_of(RUNBOOK, "  admin_db:"), "not UTF-8")
    )
    return cases


BAD = bad_runbooks()


@pytest.mark.parametrize(
    ("text", "line", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_malformed_runbook_names_file_and_line(
    base_env: dict[str, str], tmp_path: Path, text: bytes, line: int, expected: str
) -> None:
    """A malformed runbook.yaml: exit 2, one line `<file>:<line>: <what>`, nothing runs.
    In-process (call_cli): what is said and decided, not how a process ends, is the point."""
    path = tmp_path / "runbook.yaml"
    path.write_bytes(text)
    for args in (("list",), ("restore", "latest", "--confirm", "preskool_db")):
        result = call_cli("--runbook", str(path), *args)
        assert result.returncode == 2, result.stdout + result.stderr
        assert_says(the_error(result), f"preskool-dr: error: {path}:{line}: ", expected)
    assert not (Path(base_env["PRESKOOL_DR_STATE_DIR"]) / "runs").exists()


@pytest.mark.parametrize("kind", ["missing", "a-folder"])
def test_unreadable_runbook_is_named(base_env: dict[str, str], tmp_path: Path, kind: str) -> None:
    """The runbook path does not exist or is a folder: exit 2 naming it and --runbook."""
    path = tmp_path / "runbook.yaml"
    if kind == "a-folder":
        path.mkdir()
    result = run(cli_argv("list", runbook=path))
    assert result.returncode == 2, result.stdout + result.stderr
    line = the_error(result)
    assert_says(line, f"preskool-dr: error: {path}")
    assert "--runbook" in line or "Is a directory" in line, line


def test_missing_pgpassword_is_named(site: Site) -> None:
    """PGPASSWORD not set: the run fails before step 1 stops the app, naming PGPASSWORD."""
    site.backup()
    env = site.env()
    del env["PGPASSWORD"]
    result = site.cli("restore", "latest", "--confirm", site.db.name, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_says(the_error(result), "no password supplied", "PGPASSWORD")
    assert site.calls() == []
    site.assert_no_leak(result)


def test_bad_db_port_is_exit_2(base_env: dict[str, str]) -> None:
    """DB_PORT that is not a number: exit 2 naming the variable."""
    result = run(cli_argv("list"), {**os.environ, "DB_PORT": "54x2"})
    assert result.returncode == 2
    assert_says(the_error(result), "DB_PORT must be a port number, got '54x2'")


def test_bucket_without_credentials_is_named(
    s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3_BUCKET set but no AWS credentials anywhere: exit 1 naming the variables to set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {
        "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    result = run(cli_argv("list", "--source", "s3"), env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_says(the_error(result), "no AWS credentials found", "AWS_ACCESS_KEY_ID")


def test_bare_environment_says_where_it_looked(base_env: dict[str, str], tmp_path: Path) -> None:
    """Nothing but PATH set (cron, a fresh shell): exit 2 naming the default BACKUP_DIR and
    the variable that moves it."""
    default = load_config(REPO / "runbook.yaml", env={}).backups.dir
    if default.exists():
        pytest.skip(f"{default} exists on this machine")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    result = run(cli_argv("list", runbook=REPO / "runbook.yaml"), env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert_says(the_error(result), f"backup directory {default} does not exist", "BACKUP_DIR")


def test_unknown_step_ids_are_usage_errors(base_env: dict[str, str]) -> None:
    """A front end asking for a step that does not exist gets a UsageError listing the nine."""
    make_backup(Path(base_env["BACKUP_DIR"]), NOW - timedelta(hours=1))
    engine = Engine.start(load_config(), RunOptions(backup_spec="latest", operator="ops"))
    try:
        for call in (
            lambda: engine.run_step("migrations"),
            lambda: engine.skip_step("migrations", "typo"),
            lambda: engine.blocked_reason("migrations"),
        ):
            with pytest.raises(UsageError, match=r"unknown step 'migrations'.*app_offline"):
                call()
    finally:
        engine.close()


def _journal_run(base_env: dict[str, str]) -> tuple[Journal, str]:
    make_backup(Path(base_env["BACKUP_DIR"]), NOW - timedelta(hours=1))
    engine = Engine.start(load_config(), RunOptions(backup_spec="latest", operator="ops"))
    engine.close()
    return Journal(load_config().state_dir), engine.state.run_id


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _rename_a_step(path: Path) -> None:
    data = json.loads(path.read_text())
    data["steps"][6]["id"] = "migrations"
    path.write_text(json.dumps(data))


def _steps_not_a_list(path: Path) -> None:
    data = json.loads(path.read_text())
    data["steps"] = "all of them"
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("damage", [_truncate, _rename_a_step, _steps_not_a_list])
def test_damaged_journal_is_refused_by_path(base_env: dict[str, str], damage) -> None:
    """A run journal cut short, naming other steps, or of the wrong shape: --resume exits 2
    naming the file; --list-runs still lists the others."""
    journal, run_id = _journal_run(base_env)
    damage(journal.path(run_id))
    resumed = call_cli("restore", "--resume", run_id, "--confirm", "preskool_db")
    assert resumed.returncode == 2, resumed.stdout + resumed.stderr
    assert_says(the_error(resumed), str(journal.path(run_id)), "cannot be resumed")
    listed = call_cli("restore", "--list-runs")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr


def test_run_id_that_is_a_path_is_refused(base_env: dict[str, str]) -> None:
    """--resume ../../etc/passwd is not a run id: exit 2, nothing read."""
    result = run(cli_argv("restore", "--resume", "../../etc/passwd", "--confirm", "x"))
    assert result.returncode == 2
    assert_says(the_error(result), "is not a run id", "--list-runs")


def _non_utf8_names(folder: Path) -> None:
    for raw in (b"preskool-backup-\xff\xfe.sql.gz", b"caf\xe9.sql.gz.md5", b"\xe9t\xe9.part"):
        Path(os.fsdecode(bytes(folder) + b"/" + raw)).write_bytes(b"junk")


@pytest.mark.parametrize("where", ["names-in-dir", "dir-itself"])
def test_non_utf8_file_names_are_listed_not_fatal(
    base_env: dict[str, str], tmp_path: Path, where: str
) -> None:
    """Bytes that are not UTF-8 in BACKUP_DIR entries or in BACKUP_DIR's own path, on a
    strict UTF-8 terminal: list, list --json, verify and check work."""
    folder = Path(base_env["BACKUP_DIR"])
    if where == "dir-itself":
        folder = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9-backups"))
        folder.mkdir()
    backup = make_backup(folder, NOW - timedelta(hours=1))
    _non_utf8_names(folder)
    env = {**os.environ, "BACKUP_DIR": str(folder), "PYTHONIOENCODING": "utf-8"}

    listed = run(cli_argv("list"), env)
    as_json = run(cli_argv("list", "--json"), env)
    verified = run(cli_argv("verify", "latest"), env)
    checked = run(cli_argv("check"), env)

    for result in (listed, as_json, verified, checked):
        assert "Traceback" not in result.stderr, result.stderr
    assert listed.returncode == 0 and backup.name in listed.stdout
    assert [r["name"] for r in json.loads(as_json.stdout)] == [backup.name]
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert checked.returncode in (0, 1, 2), checked.stdout + checked.stderr


@pytest.mark.slow
def test_non_utf8_psql_output_is_shown_replaced(site: Site) -> None:
    """psql prints bytes that are not UTF-8 (a LATIN1 session's error): the load stops with
    one line naming the input line (the serial stream does), the bytes replaced; rollback
    works."""
    write_runbook(site.root, app=site.app, restore={"method": "serial"})
    backup = site.backup()
    before = site.checksum()
    bad = b"SET client_encoding = 'LATIN1';\nSELECT 'caf\xe9'::int;\n"
    sql_bytes = insert_before(backup_sql(backup), b"COPY public.students", bad)
    rewrite_backup(backup, sql_bytes)
    env = site.env(PYTHONIOENCODING="utf-8")
    result = site.cli("restore", backup.name, "--confirm", site.db.name, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_says(the_error(result), "restore stopped at input line", "caf\ufffd")
    state = site.the_run()
    rolled = site.cli("restore", "--rollback", state.run_id, "--confirm", site.db.name)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert site.checksum() == before
    site.assert_no_leak(result, rolled)


def test_usage_mistakes_are_exit_2(base_env: dict[str, str]) -> None:
    """Restore without --confirm, with a bad --incident-at, or an unknown option: exit 2."""
    make_backup(Path(base_env["BACKUP_DIR"]), NOW - timedelta(hours=1))
    cases = [
        (("restore", "latest"), "does not match the target database"),
        (("restore", "latest", "--confirm", "preskool_db", "--incident-at", "noon"), "ISO-8601"),
        (("restore", "latest", "--confirm", "preskool_db", "--colour"), "unrecognized"),
    ]
    for args, expected in cases:
        result: subprocess.CompletedProcess[str] = run(cli_argv(*args))
        assert result.returncode == 2, result.stdout + result.stderr
        assert expected in result.stderr and "Traceback" not in result.stderr
