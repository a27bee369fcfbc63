"""The seed runbook's schedule as systemd units or a cron file, generated from one table.

Section 1 of the seed: daily backup 02:00 UTC, weekly archive Sunday 01:00 UTC, restore-test
Sunday 03:00 UTC; section 5's alerts come from `check`, run every few minutes to keep the
node-exporter textfile fresh. `seed_jobs` holds each job once (its arguments and its time);
both renderers and the `--help` table read it, so they cannot drift apart.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from preskool_dr.core.base.errors import ConfigError, UsageError
from preskool_dr.core.base.host_files import environment_file, read_environment_file
from preskool_dr.core.base.runbook_file import find_runbook

DEFAULT_PROMETHEUS_FILE = Path("/var/lib/prometheus/node-exporter/preskool_dr.prom")
CHECK_INTERVALS = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30)  # minutes that divide an hour evenly
SYSTEMD_DIR = Path("/etc/systemd/system")
CRON_DIR = Path("/etc/cron.d")
CRON_FILE_NAME = "preskool-dr"  # cron skips /etc/cron.d names holding a dot
UNIT_PREFIX = "preskool-dr-"
FORMATS = ("systemd", "cron")


@dataclass(frozen=True)
class When:
    """A UTC time of the schedule: daily or Sunday at hour:minute, or every N minutes."""

    hour: int = 0
    minute: int = 0
    sunday: bool = False
    every_minutes: int | None = None

    def on_calendar(self) -> str:
        if self.every_minutes:
            return f"*-*-* *:00/{self.every_minutes}:00 UTC"
        day = "Sun " if self.sunday else ""
        return f"{day}*-*-* {self.hour:02d}:{self.minute:02d}:00 UTC"

    def cron_fields(self) -> str:
        if self.every_minutes:
            return f"*/{self.every_minutes} * * * *"
        return f"{self.minute} {self.hour} * * {'0' if self.sunday else '*'}"

    def describe(self) -> str:
        if self.every_minutes:
            return f"every {self.every_minutes} minutes"
        day = "Sunday" if self.sunday else "daily"
        return f"{day} {self.hour:02d}:{self.minute:02d} UTC"


@dataclass(frozen=True)
class Job:
    """One scheduled command: unit name `preskool-dr-<name>`, its arguments, its time."""

    name: str
    summary: str
    args: tuple[str, ...]
    when: When
    writes: tuple[str, ...]  # which of `Settings.writable` it needs (ProtectSystem=strict)
    cron_log: str  # cron appends the output here (the seed's log files); systemd: journald
    # A check that answers WARNING (1) or CRITICAL (2) did its job: the alert is in the
    # textfile. Only UNKNOWN (3, the check could not run) marks the unit failed.
    success_exit_status: tuple[int, ...] = ()


@dataclass(frozen=True)
class Settings:
    """Everything about the host the units and cron lines name."""

    executable: tuple[str, ...]  # absolute path of preskool-dr (or python -m preskool_dr)
    runbook: Path | None  # passed as --runbook when given
    environment_file: Path
    backup_dir: Path
    state_dir: Path
    user: str = "root"
    prometheus_file: Path = DEFAULT_PROMETHEUS_FILE
    check_every: int = 5

    def jobs(self) -> tuple[Job, ...]:
        return seed_jobs(self.prometheus_file, self.check_every)

    @property
    def writable(self) -> dict[str, Path]:
        return {
            "backups": self.backup_dir,
            "state": self.state_dir,
            "prometheus": self.prometheus_file.parent,
        }


def host_settings(
    runbook: Path | None,
    *,
    user: str | None = None,
    prometheus_file: Path = DEFAULT_PROMETHEUS_FILE,
    check_every: int = 5,
    env_file: Path | None = None,
) -> Settings:
    """Settings for this host. The folders the jobs write are the ones the jobs will use:
    they see the environment file (`env_file`, default `environment_file()`), never the
    shell this runs in, so BACKUP_DIR and PRESKOOL_DR_STATE_DIR come from that file, then
    the runbook (backups.dir, state_dir), then the defaults (the state folder under the job
    user's home)."""
    if check_every not in CHECK_INTERVALS:
        raise UsageError(
            f"the check interval must divide an hour evenly: one of {CHECK_INTERVALS} minutes"
        )
    user = user or pwd.getpwuid(os.geteuid()).pw_name
    try:
        home = Path(pwd.getpwnam(user).pw_dir)
    except KeyError:
        raise UsageError(f"there is no user {user!r} on this host (--user)") from None
    env_file = env_file or environment_file()
    job_env = read_environment_file(env_file)
    try:
        found: Path | None = find_runbook(runbook, job_env)
    except ConfigError:
        found = None  # none anywhere yet (find_runbook never fails on an explicit path)
    shared_state = None
    if found is not None:
        # imported here: `--help` shows this module's schedule without loading yaml
        from preskool_dr.core.base.config import load_config

        config = load_config(found, job_env)
        backup_dir = config.backups.dir  # BACKUP_DIR wins there too
        shared_state = config.runbook_state_dir
    else:
        from preskool_dr.core.base.settings import BackupSettings

        backup_dir = Path(job_env.get("BACKUP_DIR") or BackupSettings().dir)
    explicit_state = job_env.get("PRESKOOL_DR_STATE_DIR")
    # what `paths.state_dir` gives the job: systemd and cron set no XDG_STATE_HOME
    states = (
        Path(explicit_state)
        if explicit_state
        else shared_state or home / ".local/state/preskool-dr"
    )
    return Settings(
        executable=running_executable(),
        runbook=Path(os.path.abspath(runbook.expanduser())) if runbook else None,  # its link kept
        environment_file=env_file.expanduser().absolute(),
        backup_dir=backup_dir.expanduser().absolute(),
        state_dir=states.expanduser().absolute(),
        user=user,
        prometheus_file=prometheus_file.expanduser().absolute(),
        check_every=check_every,
    )


def running_executable() -> tuple[str, ...]:
    """The absolute argv that runs this preskool-dr: the script itself (symlinks resolved),
    else `preskool-dr` on PATH, else this Python with `-m preskool_dr`."""
    script = Path(sys.argv[0])
    if script.name == "preskool-dr" and script.is_file():
        return (str(script.resolve()),)
    on_path = shutil.which("preskool-dr")
    if on_path:
        return (str(Path(on_path).resolve()),)
    return (str(Path(sys.executable).absolute()), "-m", "preskool_dr")


def seed_jobs(
    prometheus_file: Path = DEFAULT_PROMETHEUS_FILE, check_every: int = 5
) -> tuple[Job, ...]:
    """The seed's schedule (section 1) plus the monitoring check (section 5)."""
    return (
        Job(
            "backup",
            "daily backup (pg_dump, md5, verify, upload, retention)",
            ("backup",),
            When(hour=2),
            ("backups", "state"),
            "/var/log/preskool-backup.log",
        ),
        Job(
            "backup-weekly",
            "weekly archive backup (uploaded as GLACIER, kept 1 year)",
            ("backup", "--kind", "weekly"),
            When(hour=1, sunday=True),
            ("backups", "state"),
            "/var/log/preskool-backup.log",
        ),
        Job(
            "restore-test",
            "weekly restore-test of the latest backup into preskool_restore_test",
            ("restore-test",),
            When(hour=3, sunday=True),
            ("backups", "state"),
            "/var/log/preskool-restore-test.log",
        ),
        Job(
            "check",
            "backup health check for node-exporter's textfile collector",
            ("check", "--prometheus", str(prometheus_file)),
            When(every_minutes=check_every),
            ("state", "prometheus"),
            "/dev/null",
            success_exit_status=(1, 2),
        ),
    )


def command(settings: Settings, job: Job) -> list[str]:
    runbook = ["--runbook", str(settings.runbook)] if settings.runbook else []
    return [*settings.executable, *runbook, *job.args]


def render(kind: str, settings: Settings) -> dict[str, str]:
    """File name -> text: two units per job for systemd, one file for cron."""
    if kind == "systemd":
        return systemd_units(settings)
    if kind == "cron":
        return {CRON_FILE_NAME: cron_file(settings)}
    raise UsageError(f"unknown schedule format {kind!r}: choose one of {', '.join(FORMATS)}")


def timer_names(settings: Settings) -> list[str]:
    return [f"{UNIT_PREFIX}{job.name}.timer" for job in settings.jobs()]


# ---------------------------------------------------------------------------- systemd


def systemd_units(settings: Settings) -> dict[str, str]:
    units: dict[str, str] = {}
    for job in settings.jobs():
        stem = f"{UNIT_PREFIX}{job.name}"
        units[f"{stem}.service"] = _unit_text(_service_sections(settings, job))
        units[f"{stem}.timer"] = _unit_text(_timer_sections(job))
    return units


Sections = dict[str, list[tuple[str, str]]]


def _service_sections(settings: Settings, job: Job) -> Sections:
    service = [
        ("Type", "oneshot"),
        ("ExecStart", " ".join(_exec_word(word) for word in command(settings, job))),
        ("EnvironmentFile", _specifiers(str(settings.environment_file))),
    ]
    if settings.user != "root":
        service.append(("User", settings.user))
    if job.success_exit_status:
        service.append(("SuccessExitStatus", " ".join(map(str, job.success_exit_status))))
    writable = " ".join(_quoted("-" + str(settings.writable[key])) for key in job.writes)
    service += [
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectSystem", "strict"),
        # `-`: a folder that does not exist yet is skipped instead of failing the unit
        ("ReadWritePaths", writable),
    ]
    return {
        "Unit": [
            ("Description", f"preskool-dr: {job.summary}"),
            ("Wants", "network-online.target"),
            ("After", "network-online.target postgresql.service"),
        ],
        "Service": service,
    }


def _timer_sections(job: Job) -> Sections:
    timer = [("OnCalendar", job.when.on_calendar())]
    if not job.when.every_minutes:
        # a backup missed while the host was down runs at boot, on the hour, not spread out
        timer += [("Persistent", "true"), ("RandomizedDelaySec", "0")]
    return {
        "Unit": [("Description", f"preskool-dr: {job.summary}, {job.when.describe()}")],
        "Timer": timer,
        "Install": [("WantedBy", "timers.target")],
    }


def _unit_text(sections: Sections) -> str:
    blocks = ["# Written by `preskool-dr schedule install systemd`; times are UTC (seed runbook)."]
    for name, entries in sections.items():
        blocks.append("\n".join([f"[{name}]", *(f"{key}={value}" for key, value in entries)]))
    return "\n\n".join(blocks) + "\n"


_PLAIN_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def _specifiers(text: str) -> str:
    """systemd expands `%x` specifiers in most settings: a literal % is `%%`."""
    _refuse_control_characters(text)
    return text.replace("%", "%%")


def _quoted(text: str) -> str:
    text = _specifiers(text)
    if _PLAIN_WORD.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _exec_word(word: str) -> str:
    """One ExecStart argument: `$` also expands there (`$$` is a literal one)."""
    return _quoted(word.replace("$", "$$"))


def _refuse_control_characters(text: str) -> None:
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in text):
        raise UsageError(f"{text!r} holds a control character; it cannot go into a unit file")


# ---------------------------------------------------------------------------- cron


def cron_file(settings: Settings) -> str:
    env = shlex.quote(str(settings.environment_file))
    lines = [
        "# preskool-dr: the seed runbook's schedule, written by `preskool-dr schedule install cron`.",
        "# Times are UTC: cronie honours CRON_TZ; with another cron, keep the host clock on UTC.",
        "# Each job first reads its secrets from the environment file (mode 0600, readable by",
        "# the user the job runs as).",
        "CRON_TZ=UTC",
        "SHELL=/bin/sh",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ]
    for job in settings.jobs():
        argv = " ".join(shlex.quote(word) for word in command(settings, job))
        run = f"set -a && . {env} && set +a && exec {argv} >> {shlex.quote(job.cron_log)} 2>&1"
        _refuse_control_characters(run)
        run = run.replace("%", "\\%")  # cron turns a bare % into a newline
        lines += ["", f"# {job.summary}: {job.when.describe()}"]
        lines.append(f"{job.when.cron_fields()} {settings.user} {run}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- install


def install(files: dict[str, str], folder: Path, *, force: bool) -> list[Path]:
    """Write `files` into `folder` (created when missing), mode 0644, each replaced
    atomically. Refuses (exit 2, nothing written) when one exists, unless `force`."""
    targets = [folder / name for name in files]
    existing = [path for path in targets if path.exists() or path.is_symlink()]
    if existing and not force:
        names = ", ".join(str(path) for path in existing)
        verb = "exists" if len(existing) == 1 else "exist"
        raise UsageError(f"{names} already {verb}; nothing was written - add --force to replace")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for path, text in zip(targets, files.values(), strict=True):
            _write_atomically(path, text)
    except OSError as exc:
        raise UsageError(
            f"cannot write into {folder}: {exc.strerror or exc} - run as root, or pass "
            "--dir FOLDER and copy the files into place"
        ) from None
    return targets


def _write_atomically(path: Path, text: str) -> None:
    # Replacing (not writing through) also replaces a symlink itself, never its target.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # cron ignores files that group or others may write
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def next_steps(kind: str, folder: Path, settings: Settings) -> list[str]:
    """What the operator runs after `schedule install`."""
    steps: list[str] = []
    if not settings.environment_file.exists():
        steps.append(
            f"# {settings.environment_file} does not exist yet: `preskool-dr init` writes it "
            "(mode 0600, the secrets the jobs read)"
        )
    if kind == "systemd":
        missing = [
            str(path) for path in sorted(set(settings.writable.values())) if not path.is_dir()
        ]
        if missing:
            steps.append(
                f"# not there yet: {', '.join(missing)} - create them (`preskool-dr init` makes "
                "the backup and state folders): ProtectSystem=strict lets the jobs write only "
                "into folders that exist"
            )
        if folder.resolve() != SYSTEMD_DIR:
            steps.append(
                f"install -m 0644 {shlex.quote(str(folder))}/{UNIT_PREFIX}* {SYSTEMD_DIR}/"
            )
        steps += [
            "systemctl daemon-reload",
            "systemctl enable --now " + " ".join(timer_names(settings)),
            f"systemctl list-timers '{UNIT_PREFIX}*'",
        ]
    else:
        if settings.user != "root":
            steps.append(
                f"chown {settings.user} {shlex.quote(str(settings.environment_file))}  "
                f"# cron jobs read it as {settings.user} (it stays 0600)"
            )
            for log in sorted({job.cron_log for job in settings.jobs()} - {"/dev/null"}):
                steps.append(f"touch {log} && chown {settings.user} {log}  # cron appends to it")
        path = folder / CRON_FILE_NAME
        if folder.resolve() != CRON_DIR:
            steps.append(
                f"install -m 0644 -o root {shlex.quote(str(path))} {CRON_DIR / CRON_FILE_NAME}"
            )
        steps.append(f"# cron reads {CRON_DIR / CRON_FILE_NAME} by itself; nothing to reload")
    return steps
