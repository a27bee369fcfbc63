"""`preskool-dr init`: a first runbook, the environment file for secrets, and the folders.

A system install (run as root) keeps everything where every role on the host finds it:
/etc/preskool-dr for the runbook and the environment file, /var/backups/preskool for the
backups and /var/lib/preskool-dr for the state, named in the runbook (`state_dir`, which
every user of it reads) and readable by a `preskool-dr` group (created when missing), so
`check` run as the monitoring user sees the record of the restore-test root ran. A user
install keeps it under the XDG folders, private to that user.
"""

from __future__ import annotations

import grp
import os
import re
import shlex
import shutil
import typing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from preskool_dr import __version__
from preskool_dr.core.base.errors import UsageError
from preskool_dr.core.base.paths import state_dir
from preskool_dr.core.base.procs import run_command
from preskool_dr.core.base.runbook_file import runbook_search_path, shipped_runbook_path

ENV_FILE_NAME = "preskool-dr.env"
SYSTEM_GROUP = "preskool-dr"
SYSTEM_STATE_DIR = Path("/var/lib/preskool-dr")
SYSTEM_BACKUP_DIR = Path("/var/backups/preskool")
RUNBOOK_MODE = 0o644  # no secrets in it; the monitoring user must read it
ENV_FILE_MODE = 0o600  # passwords and keys
# the template's backups.dir line, replaced by the folder init creates
_BACKUP_DIR_LINE = re.compile(r"^(  dir: )/var/backups/preskool\b", re.MULTILINE)
# the template's commented state_dir line, replaced by the state folder init creates
_STATE_DIR_LINE = re.compile(r"^# (state_dir: )/var/lib/preskool-dr\b", re.MULTILINE)
# A system state folder: root's, its group may read (the monitoring user is a member),
# others nothing; set-group-ID, so what is written below it stays in that group.
SYSTEM_STATE_MODE = 0o2750
_PLAIN_PATH = re.compile(r"[A-Za-z0-9._/+-]+")


@dataclass(frozen=True)
class SiteLayout:
    """Where `init` writes; `system` is a root install with group-readable folders."""

    runbook: Path
    backup_dir: Path
    state_dir: Path
    system: bool

    @property
    def env_file(self) -> Path:
        return self.runbook.parent / ENV_FILE_NAME

    @property
    def dir_mode(self) -> int:
        return 0o750 if self.system else 0o700

    @property
    def state_mode(self) -> int:
        return SYSTEM_STATE_MODE if self.system else 0o700


@dataclass
class InitReport:
    """What `init` did, one line each, for the command to print."""

    done: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def default_layout(
    path: Path | None = None,
    *,
    backup_dir: Path | None = None,
    state: Path | None = None,
    system: bool | None = None,
    env: typing.Mapping[str, str] | None = None,
) -> SiteLayout:
    """The places for this user: root gets the system ones, anyone else the XDG ones.
    BACKUP_DIR and PRESKOOL_DR_STATE_DIR, when set, win over the defaults."""
    env = os.environ if env is None else env
    system = os.geteuid() == 0 if system is None else system
    if path is None:
        path = Path("/etc/preskool-dr/runbook.yaml") if system else runbook_search_path(env)[0]
    elif path.is_dir():
        path = path / "runbook.yaml"
    if backup_dir is None:
        if env.get("BACKUP_DIR"):
            backup_dir = Path(env["BACKUP_DIR"])
        elif system:
            backup_dir = SYSTEM_BACKUP_DIR
        else:
            data_home = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
            backup_dir = Path(data_home) / "preskool-dr" / "backups"
    if state is None:
        explicit = env.get("PRESKOOL_DR_STATE_DIR")
        state = Path(explicit) if explicit else (SYSTEM_STATE_DIR if system else state_dir())
    return SiteLayout(
        runbook=path.expanduser().absolute(),
        backup_dir=backup_dir.expanduser().absolute(),
        state_dir=state.expanduser().absolute(),
        system=system,
    )


def _yaml_path(folder: Path) -> str:
    text = str(folder)
    return text if _PLAIN_PATH.fullmatch(text) else '"' + text.replace('"', '\\"') + '"'


def runbook_text(layout: SiteLayout, now: datetime | None = None) -> str:
    """The shipped template with a header, backups.dir and state_dir set to the folders
    init makes."""
    template = shipped_runbook_path().read_text(encoding="utf-8")
    value = _yaml_path(layout.backup_dir)
    text, replaced = _BACKUP_DIR_LINE.subn(lambda m: m.group(1) + value, template, count=1)
    if replaced != 1:
        raise AssertionError("the shipped runbook has no `  dir: /var/backups/preskool` line")
    state = _yaml_path(layout.state_dir)
    text, replaced = _STATE_DIR_LINE.subn(lambda m: m.group(1) + state, text, count=1)
    if replaced != 1:
        raise AssertionError("the shipped runbook has no `# state_dir: /var/lib/preskool-dr` line")
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        f"# Written by `preskool-dr init` on {stamp} (preskool-dr {__version__}).\n"
        f"# Secrets go in {layout.env_file} (mode 0600) or ~/.pgpass, never in this file.\n"
        f"# After every edit:  preskool-dr --runbook {layout.runbook} config check\n#\n"
    )
    return header + text


def env_file_text(layout: SiteLayout) -> str:
    """The environment file: the non-secret locations set, every secret a commented line.
    systemd reads it with EnvironmentFile=, cron with `set -a; . FILE; set +a`."""
    return f"""\
# preskool-dr environment: secrets and site settings for cron and systemd. Keep it mode 0600.
# systemd: EnvironmentFile={layout.env_file}
# cron / a shell: set -a; . {shlex.quote(str(layout.env_file))}; set +a
# These win over runbook.yaml. Never put a password in the runbook.
PRESKOOL_DR_RUNBOOK={shlex.quote(str(layout.runbook))}
# The state folder is the runbook's state_dir ({layout.state_dir}), the same for every
# user who reads the runbook; setting it here would give these jobs a state of their own.
#PRESKOOL_DR_STATE_DIR=

# Database passwords: best in a pgpass file (one line per role, so the admin role
# `postgres` and the app role `preskool` can have different passwords), mode 0600:
#   host:port:database:user:password   e.g.  localhost:5432:*:postgres:...
# libpq reads ~/.pgpass of the user that runs the job, or the file named here:
#PGPASSFILE=/etc/preskool-dr/pgpass
# Or a libpq service file section for TLS and similar settings (the runbook still says
# which host, port, database and user):
#PGSERVICEFILE=/etc/preskool-dr/pg_service.conf
#PGSERVICE=preskool
# Or one password for both roles:
#PGPASSWORD=

# Where the database is, when it differs from the runbook:
#DB_HOST=localhost
#DB_PORT=5432
#DB_NAME=preskool_db
#DB_USER=preskool

# Off-site copies (with no bucket, nothing touches S3):
#S3_BUCKET=
#AWS_ACCESS_KEY_ID=
#AWS_SECRET_ACCESS_KEY=
#AWS_DEFAULT_REGION=
#AWS_ENDPOINT_URL=
"""


def init_site(layout: SiteLayout, *, force: bool = False) -> InitReport:
    """Write the runbook and the environment file, create the folders. Refuses (exit 2) to
    replace a runbook unless `force`; the old one is then kept as `<runbook>.bak`. An
    existing environment file is never replaced: it may hold the site's secrets."""
    report = InitReport()
    if layout.runbook.exists() and not force:
        raise UsageError(
            f"{layout.runbook} already exists; nothing was written. Check it with "
            f"`preskool-dr --runbook {layout.runbook} config check`, or run the same `init` "
            "with --force to replace it (the old file is kept as .bak), or with --path P to "
            "write somewhere else"
        )
    group = ensure_system_group(report) if layout.system else None
    config_dir = layout.runbook.parent
    if not config_dir.is_dir():
        config_dir.mkdir(parents=True, mode=0o755 if layout.system else 0o700)
        report.done.append(f"created {config_dir}")
    if layout.runbook.exists():
        backup = layout.runbook.with_name(layout.runbook.name + ".bak")
        os.replace(layout.runbook, backup)
        report.done.append(f"kept the old runbook as {backup}")
    _write_new(layout.runbook, runbook_text(layout), RUNBOOK_MODE)
    report.done.append(f"wrote {layout.runbook} (mode {RUNBOOK_MODE:04o}): the commented runbook")
    if layout.env_file.exists():
        report.done.append(f"kept {layout.env_file} as it is (it may hold secrets)")
    else:
        _write_new(layout.env_file, env_file_text(layout), ENV_FILE_MODE)
        report.done.append(
            f"wrote {layout.env_file} (mode {ENV_FILE_MODE:04o}): secrets for cron and "
            "systemd, every secret line commented out"
        )
    report.done.append(_make_folder("backup", layout.backup_dir, layout.dir_mode, group))
    report.done.append(_make_folder("state", layout.state_dir, layout.state_mode, group))
    if layout.system and group is None:
        report.notes.append(
            f"no `{SYSTEM_GROUP}` group: to let the monitoring user read the state, run "
            f"`groupadd --system {SYSTEM_GROUP}; chgrp {SYSTEM_GROUP} {layout.state_dir} "
            f"{layout.backup_dir}; chmod 2750 {layout.state_dir}` and add that user to the group"
        )
    elif layout.system:
        report.notes.append(
            f"`check` run as another user (the monitoring one) reads the state when that user "
            f"is in the `{SYSTEM_GROUP}` group: usermod -aG {SYSTEM_GROUP} nagios (or "
            "prometheus, ...)"
        )
    return report


def ensure_system_group(report: InitReport, name: str = SYSTEM_GROUP) -> int | None:
    """The group `name`'s id, created (`groupadd --system`) when missing and we are root;
    None when it cannot be had (then the report's note says what to run)."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        pass
    groupadd = shutil.which("groupadd") or shutil.which("groupadd", path="/usr/sbin:/sbin")
    if os.geteuid() != 0 or groupadd is None:
        return None
    done = run_command([groupadd, "--system", name], timeout=60)
    try:
        gid = grp.getgrnam(name).gr_gid
    except KeyError:
        report.notes.append(f"groupadd --system {name} failed: {done.describe()}")
        return None
    report.done.append(f"created the system group {name} (gid {gid})")
    return gid


def _make_folder(what: str, folder: Path, mode: int, group: int | None) -> str:
    """Create `folder` with `mode` (parents: 0755 for a system folder, else 0700). One that
    exists keeps its mode and owner; the line says when group or others can write it."""
    if folder.is_dir():
        current = folder.stat().st_mode & 0o7777
        warning = (
            f"; WARNING: group or others can write it, fix: chmod go-w {folder}"
            if current & 0o022
            else ""
        )
        return f"{what} folder {folder} exists (mode {current:04o}), left as it is{warning}"
    folder.parent.mkdir(parents=True, exist_ok=True, mode=0o755 if mode & 0o050 else 0o700)
    folder.mkdir(mode=mode & 0o777)
    owner = ""
    if group is not None:
        os.chown(folder, -1, group)
        owner = f", group {SYSTEM_GROUP}"
    os.chmod(folder, mode)  # after chown, which clears set-group-ID; mkdir's goes via the umask
    return f"created the {what} folder {folder} (mode {mode:04o}{owner})"


def _write_new(path: Path, text: str, mode: int) -> None:
    """Write `path` through a temporary file in its folder, with `mode` from the start (the
    secrets never sit in a file others can read), then move it into place."""
    temporary = path.with_name(f".{path.name}.init-{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), mode)  # O_CREAT's mode goes through the umask
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
