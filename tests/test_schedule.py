"""`preskool-dr schedule`: the units and cron lines say the seed's schedule (parsed, not
compared as text), systemd's own tools accept them where installed, and `install` writes,
refuses and replaces files as documented. No database: nothing here connects to one."""

from __future__ import annotations

import configparser
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from preskool_dr.core.base.host_files import environment_file, read_environment_file
from preskool_dr.core.base.schedule import Settings, render
from tests.support.cli import run_cli
from tests.support.runbook import REPO

# The seed runbook, section 1 (and the check every 5 minutes): job -> (Sunday only, hour,
# minute); hour None = every 5 minutes. Written out here, not taken from the code under test.
SEED = {
    "backup": (False, 2, 0),
    "backup-weekly": (True, 1, 0),
    "restore-test": (True, 3, 0),
    "check": (False, None, 5),
}
ARGS = {
    "backup": ["backup"],
    "backup-weekly": ["backup", "--kind", "weekly"],
    "restore-test": ["restore-test"],
    "check": ["check", "--prometheus", "/var/lib/prometheus/node-exporter/preskool_dr.prom"],
}
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed on this machine"
)


def parse_on_calendar(value: str) -> tuple[bool, int | None, int]:
    """`[Sun ]*-*-* HH:MM:00 UTC` -> (Sunday, hour, minute); `*-*-* *:00/N:00 UTC` -> (False,
    None, N). Anything else fails the test: every timer must be in UTC."""
    match = re.fullmatch(r"(Sun )?\*-\*-\* (\d\d|\*):(\d\d)(?:/(\d+))?:00 UTC", value)
    assert match, f"unexpected OnCalendar={value}"
    sunday, hour, minute, step = match.groups()
    if hour == "*":
        assert minute == "00" and step and not sunday, value
        return False, None, int(step)
    assert step is None, value
    return bool(sunday), int(hour), int(minute)


def parse_cron_fields(fields: list[str]) -> tuple[bool, int | None, int]:
    minute, hour, day, month, weekday = fields
    assert (day, month) == ("*", "*"), fields
    if minute.startswith("*/"):
        assert (hour, weekday) == ("*", "*"), fields
        return False, None, int(minute[2:])
    assert weekday in ("*", "0"), fields
    return weekday == "0", int(hour), int(minute)


def split_printed_units(text: str) -> dict[str, configparser.ConfigParser]:
    units: dict[str, configparser.ConfigParser] = {}
    for chunk in re.split(r"^# ---- ", text, flags=re.M)[1:]:
        name, body = chunk.split("\n", 1)
        parser = configparser.ConfigParser(interpolation=None, strict=True)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read_string(body)
        units[name] = parser
    return units


def job_of(unit_name: str) -> str:
    return unit_name.removeprefix("preskool-dr-").rsplit(".", 1)[0]


def preskool_args(argv: list[str]) -> list[str]:
    """The arguments after the executable (preskool-dr, or python -m preskool_dr)."""
    first = Path(argv[0])
    assert first.is_absolute() and first.exists(), argv
    rest = argv[3:] if argv[1:3] == ["-m", "preskool_dr"] else argv[1:]
    return rest


def print_schedule(kind: str, *options: str, runbook: str | None = None) -> str:
    before = ["--runbook", runbook] if runbook else []
    result = run_cli(*before, "schedule", "print", kind, *options)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def job_env_file(base_env: dict[str, str], tmp_path: Path) -> Path:
    """The environment file the jobs will read; its folders differ from the shell's."""
    path = tmp_path / "site" / "preskool-dr.env"
    path.parent.mkdir()
    path.write_text(
        "# what `init` writes\n"
        f"BACKUP_DIR={tmp_path}/site/backups\n"
        f"PRESKOOL_DR_STATE_DIR='{tmp_path}/site/state'\n"
        f"PRESKOOL_DR_RUNBOOK={REPO}/runbook.yaml\n"
    )
    path.chmod(0o600)
    return path


def test_systemd_units_hold_the_seed_schedule_and_hardening(
    base_env: dict[str, str], job_env_file: Path
) -> None:
    units = split_printed_units(print_schedule("systemd", "--env-file", str(job_env_file)))
    assert sorted(units) == sorted(
        f"preskool-dr-{job}.{suffix}" for job in SEED for suffix in ("service", "timer")
    )
    site = job_env_file.parent
    for name, unit in units.items():
        job = job_of(name)
        if name.endswith(".timer"):
            assert parse_on_calendar(unit["Timer"]["OnCalendar"]) == SEED[job]
            assert unit["Install"]["WantedBy"] == "timers.target"
            if job != "check":
                assert unit["Timer"]["Persistent"] == "true"
                assert unit["Timer"]["RandomizedDelaySec"] == "0"
            continue
        service = unit["Service"]
        args = preskool_args(shlex.split(service["ExecStart"]))
        assert args == ARGS[job]
        assert service["Type"] == "oneshot"
        assert service["NoNewPrivileges"] == "yes"
        assert service["PrivateTmp"] == "yes"
        assert service["ProtectSystem"] == "strict"
        assert service["EnvironmentFile"] == str(job_env_file)
        # the folders the job will use (from its environment file), not the shell's
        writable = shlex.split(service["ReadWritePaths"])
        assert f"-{site}/state" in writable
        assert f"-{base_env['PRESKOOL_DR_STATE_DIR']}" not in writable
        if job == "check":
            assert writable == [f"-{site}/state", f"-{Path(args[-1]).parent}"]
            assert service["SuccessExitStatus"] == "1 2"  # WARNING/CRITICAL are answers
        else:
            assert writable == [f"-{site}/backups", f"-{site}/state"]


def test_without_settings_the_state_folder_is_under_the_job_users_home(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    me = pwd.getpwuid(os.geteuid())
    units = split_printed_units(
        print_schedule("systemd", "--env-file", str(empty), "--user", me.pw_name)
    )
    writable = shlex.split(units["preskool-dr-backup.service"]["Service"]["ReadWritePaths"])
    assert f"-{Path(me.pw_dir)}/.local/state/preskool-dr" in writable
    unknown = run_cli("schedule", "print", "systemd", "--user", "no-such-user-9f2c")
    assert unknown.returncode == 2 and "no-such-user-9f2c" in unknown.stderr


def test_the_runbooks_state_dir_is_the_jobs_state_folder(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    """A system install names its state folder in the runbook: the units may write there."""
    runbook = tmp_path / "etc" / "runbook.yaml"
    runbook.parent.mkdir()
    runbook.write_text((REPO / "runbook.yaml").read_text() + f"state_dir: {tmp_path}/shared\n")
    empty = tmp_path / "empty.env"
    empty.write_text("")
    units = split_printed_units(
        print_schedule("systemd", "--env-file", str(empty), runbook=str(runbook))
    )
    writable = shlex.split(units["preskool-dr-backup.service"]["Service"]["ReadWritePaths"])
    assert f"-{tmp_path}/shared" in writable
    assert not any(path.endswith("/.local/state/preskool-dr") for path in writable)


def test_cron_file_holds_the_seed_schedule_in_utc(base_env: dict[str, str]) -> None:
    text = print_schedule("cron", runbook=base_env["PRESKOOL_DR_RUNBOOK"])
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert "CRON_TZ=UTC" in lines
    jobs = [line for line in lines if "=" not in line.split()[0]]
    assert len(jobs) == len(SEED)
    seen = {}
    for line in jobs:
        fields = line.split(None, 6)
        assert fields[5] == pwd.getpwuid(os.geteuid()).pw_name  # /etc/cron.d's user field
        words = shlex.split(fields[6])
        assert words[:6] == ["set", "-a", "&&", ".", str(environment_file()), "&&"]
        exec_at = words.index("exec")
        argv = words[exec_at + 1 : words.index(">>")]
        args = preskool_args(argv)
        assert args[:2] == ["--runbook", base_env["PRESKOOL_DR_RUNBOOK"]]
        job = next(job for job, expected in ARGS.items() if args[2:] == expected)
        seen[job] = parse_cron_fields(fields[:5])
    assert seen == SEED


@needs_systemd
def test_systemd_analyze_calendar_accepts_every_timer(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    units = split_printed_units(print_schedule("systemd"))
    for name, unit in units.items():
        if not name.endswith(".timer"):
            continue
        value = unit["Timer"]["OnCalendar"]
        result = subprocess.run(
            [SYSTEMD_ANALYZE, "calendar", "--iterations=3", value],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        elapses = re.findall(r"(\w{3}) \d{4}-\d\d-\d\d (\d\d):(\d\d):00 UTC", result.stdout)
        assert len(elapses) == 3, result.stdout
        sunday, hour, minute = SEED[job_of(name)]
        for weekday, at_hour, at_minute in elapses:
            if hour is None:
                assert int(at_minute) % minute == 0
            else:
                assert (int(at_hour), int(at_minute)) == (hour, minute)
                assert weekday == "Sun" or not sunday


@needs_systemd
def test_systemd_analyze_verify_accepts_the_installed_units(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    units = tmp_path / "units"
    result = run_cli("schedule", "install", "systemd", "--dir", str(units))
    assert result.returncode == 0, result.stderr
    files = sorted(str(path) for path in units.iterdir())
    assert len(files) == 8
    check = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", *files], capture_output=True, text=True, check=False
    )
    # verify only warns (exit 0) about unknown keys: any output is a finding
    assert check.returncode == 0 and check.stderr.strip() == "", check.stderr


@pytest.mark.parametrize("kind", ["systemd", "cron"])
def test_install_writes_refuses_then_force_replaces(
    base_env: dict[str, str], tmp_path: Path, kind: str
) -> None:
    folder = tmp_path / kind
    first = run_cli("schedule", "install", kind, "--dir", str(folder))
    assert first.returncode == 0, first.stderr
    written = sorted(folder.iterdir())
    assert len(written) == (8 if kind == "systemd" else 1)
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert f"wrote {path}" in first.stdout
    printed = print_schedule(kind)
    if kind == "cron":
        assert written[0].name == "preskool-dr"
        assert written[0].read_text() == printed
    else:
        assert "systemctl daemon-reload" in first.stdout
        assert "systemctl enable --now preskool-dr-backup.timer" in first.stdout
        for path in written:
            assert f"# ---- {path.name}\n{path.read_text()}" in printed

    edited = written[0]
    edited.write_text("# edited by hand\n")
    again = run_cli("schedule", "install", kind, "--dir", str(folder))
    assert again.returncode == 2
    assert "--force" in again.stderr and str(edited) in again.stderr
    assert edited.read_text() == "# edited by hand\n"  # nothing was written

    forced = run_cli("schedule", "install", kind, "--dir", str(folder), "--force")
    assert forced.returncode == 0, forced.stderr
    assert edited.read_text() != "# edited by hand\n"
    assert sorted(folder.iterdir()) == written  # no temp files left behind


def test_the_console_script_names_itself_resolved(base_env: dict[str, str]) -> None:
    script = Path(sys.executable).parent / "preskool-dr"
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable}")
    result = subprocess.run(
        [str(script), "schedule", "print", "cron", "--user", "nobody"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"exec {script.resolve()} backup >>" in result.stdout
    assert " nobody set -a" in result.stdout


def test_cron_check_line_runs_under_sh(base_env: dict[str, str], tmp_path: Path) -> None:
    """The cron line itself works: sh sources the environment file and runs `check`, which
    writes the textfile (no database: the check answers CRITICAL, and that is fine)."""
    env_file = tmp_path / "preskool-dr.env"
    env_file.write_text("".join(f"{key}='{value}'\n" for key, value in base_env.items()))
    env_file.chmod(0o600)
    prom = tmp_path / "text files" / "preskool_dr.prom"  # a space: the quoting must hold
    prom.parent.mkdir()
    settings = Settings(
        executable=(sys.executable, "-m", "preskool_dr"),
        runbook=None,
        environment_file=env_file,
        backup_dir=Path(base_env["BACKUP_DIR"]),
        state_dir=Path(base_env["PRESKOOL_DR_STATE_DIR"]),
        prometheus_file=prom,
    )
    cron = render("cron", settings)["preskool-dr"]
    line = next(line for line in cron.splitlines() if line.startswith("*/5 "))
    command = line.split(None, 6)[6]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(["/bin/sh", "-c", command], env=env, check=False, cwd=REPO)
    assert result.returncode in (0, 1, 2)  # a Nagios answer, not UNKNOWN (3)
    assert "preskool_dr_" in prom.read_text()


def test_odd_paths_are_quoted_for_systemd_and_cron(tmp_path: Path) -> None:
    settings = Settings(
        executable=("/opt/pre skool/bin/preskool-dr",),
        runbook=Path("/etc/pre%skool/run$book.yaml"),
        environment_file=Path("/etc/preskool-dr/preskool-dr.env"),
        backup_dir=Path("/srv/back ups"),
        state_dir=Path("/var/lib/preskool-dr"),
    )
    service = render("systemd", settings)["preskool-dr-backup.service"]
    assert (
        'ExecStart="/opt/pre skool/bin/preskool-dr" --runbook "/etc/pre%%skool/run$$book.yaml" '
        "backup\n" in service
    )
    assert 'ReadWritePaths="-/srv/back ups" -/var/lib/preskool-dr\n' in service
    cron = render("cron", settings)["preskool-dr"]
    line = next(line for line in cron.splitlines() if line.startswith("0 2 "))
    words = shlex.split(line.split(None, 6)[6].replace("\\%", "%"))
    assert words[words.index("exec") + 1 :][:4] == [
        "/opt/pre skool/bin/preskool-dr",
        "--runbook",
        "/etc/pre%skool/run$book.yaml",
        "backup",
    ]


def test_help_shows_the_seed_times_and_examples() -> None:
    result = run_cli("schedule", "--help")
    assert result.returncode == 0
    for text in ("0 2 * * *", "0 1 * * 0", "0 3 * * 0", "*/5 * * * *", "examples:"):
        assert text in result.stdout
    assert run_cli("schedule", "print", "launchd").returncode == 2


def test_environment_file_place_and_reading(tmp_path: Path) -> None:
    xdg = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    assert environment_file(xdg, euid=0) == Path("/etc/preskool-dr/preskool-dr.env")
    assert environment_file(xdg, euid=1000) == tmp_path / "config/preskool-dr/preskool-dr.env"
    path = tmp_path / "preskool-dr.env"
    path.write_text("# secrets\n\nexport PGPASSWORD='x y'\nBACKUP_DIR=\"/srv/b\"\nS3_BUCKET=b\n")
    assert read_environment_file(path) == {
        "PGPASSWORD": "x y",
        "BACKUP_DIR": "/srv/b",
        "S3_BUCKET": "b",
    }
    assert read_environment_file(tmp_path / "missing.env") == {}


def test_another_user_gets_user_lines_and_next_steps(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("this host has no user `nobody`")
    units = split_printed_units(print_schedule("systemd", "--user", "nobody"))
    for name, unit in units.items():
        if name.endswith(".service"):
            assert unit["Service"]["User"] == "nobody"
    result = run_cli("schedule", "install", "cron", "--dir", str(tmp_path), "--user", "nobody")
    assert result.returncode == 0, result.stderr
    # cron reads the environment file and opens the seed's logs as that user
    assert f"chown nobody {environment_file()}" in result.stdout
    assert "touch /var/log/preskool-backup.log && chown nobody" in result.stdout
    assert f"install -m 0644 -o root {tmp_path}/preskool-dr /etc/cron.d/preskool-dr" in (
        result.stdout
    )
