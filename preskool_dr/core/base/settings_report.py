"""The effective settings and where each came from, for `preskool-dr config check`.

A value comes from the runbook file (with its line), from the environment (which wins), or
is the built-in default. Secrets are only ever reported as set or not set.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import stat
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from preskool_dr.core.base.config import ENV_OVERRIDES
from preskool_dr.core.base.libpq_service import find_service, service_files
from preskool_dr.core.base.settings import Config
from preskool_dr.core.base.site_init import ENV_FILE_NAME

MASK = "********"
# Settings that live only in the environment: (variable, secret?). Only the set ones show.
ENVIRONMENT_ONLY = (
    ("PGPASSWORD", True),
    ("PGPASSFILE", False),
    ("PGSERVICE", False),
    ("PGSERVICEFILE", False),
    ("PGSSLMODE", False),
    ("AWS_ACCESS_KEY_ID", True),
    ("AWS_SECRET_ACCESS_KEY", True),
    ("AWS_SESSION_TOKEN", True),
    ("AWS_PROFILE", False),
    ("AWS_DEFAULT_REGION", False),
    ("AWS_REGION", False),
    ("AWS_ENDPOINT_URL", False),
    ("PRESKOOL_DR_NOTIFY_URLS", True),  # notification URLs carry tokens
)
# `scheme://user:password@host`: the password part of a URL in any value
_URL_PASSWORD = re.compile(r"(?P<head>://[^/:@\s]*:)[^@/\s]+@")


@dataclass(frozen=True)
class Setting:
    key: str
    value: str
    source: str  # "file", "environment" or "default"
    detail: str = ""  # the file's line, or the variable's name


def mask_url_passwords(text: str) -> str:
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}@", text)


def effective_settings(
    config: Config, file_keys: typing.Mapping[str, int], env: typing.Mapping[str, str]
) -> list[Setting]:
    """Every runbook setting, the state folder, and the environment-only ones that are set."""
    result: list[Setting] = []

    def source(key: str) -> tuple[str, str]:
        var = ENV_OVERRIDES.get(key)
        if var and env.get(var):
            return "environment", var
        if key in file_keys:
            return "file", f"line {file_keys[key]}"
        return "default", ""

    def walk(prefix: str, value: Any) -> None:
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                walk(f"{prefix}.{f.name}", getattr(value, f.name))
        elif isinstance(value, dict) and value:
            for name, inner in value.items():
                walk(f"{prefix}.{name}", inner)
        else:
            result.append(Setting(prefix, _show(value), *source(prefix)))

    for section in ("database", "backups", "thresholds", "restore_test", "app", "drill"):
        walk(section, getattr(config, section))
    walk("restore", config.restore)
    walk("encryption", config.encryption)  # public keys and a path: nothing secret
    steps = ", ".join(step.id for step in config.steps)
    result.append(Setting("steps", f"{len(config.steps)} steps: {steps}", *source("steps")))
    if env.get("PRESKOOL_DR_STATE_DIR"):
        detail = "PRESKOOL_DR_STATE_DIR"
        if "state_dir" in file_keys:  # others who read the runbook use another state
            detail += (
                f" (not the runbook's state_dir, line {file_keys['state_dir']}, which "
                "`check` run by another user without it reads)"
            )
        result.append(Setting("state_dir", str(config.state_dir), "environment", detail))
    else:
        result.append(Setting("state_dir", str(config.state_dir), *source("state_dir")))
    for var, secret in ENVIRONMENT_ONLY:
        if env.get(var):
            shown = f"{MASK} (set)" if secret else mask_url_passwords(env[var])
            result.append(Setting(var, shown, "environment", var))
    return result


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, tuple):
        if value and all(dataclasses.is_dataclass(item) for item in value):
            return "; ".join(getattr(item, "name", str(item)) for item in value)
        return shlex.join(str(item) for item in value) if value else "(none)"
    if isinstance(value, dict):
        return "(none)"
    return mask_url_passwords(str(value))


def password_source(env: typing.Mapping[str, str]) -> tuple[str, str | None]:
    """Where libpq will find the database passwords, and a warning when that will fail.

    libpq's order: PGPASSWORD, then a `password` in the PGSERVICE section, then the
    password file (PGPASSFILE, else ~/.pgpass), which it ignores when group or others can
    read it."""
    if env.get("PGPASSWORD"):
        return "PGPASSWORD (environment; one password for every role)", None
    passfile = Path(env["PGPASSFILE"]) if env.get("PGPASSFILE") else Path.home() / ".pgpass"
    service = ""
    if env.get("PGSERVICE"):
        section = find_service(env["PGSERVICE"], env)
        if section is None:
            return f"PGSERVICE={env['PGSERVICE']} (not found)", (
                f"PGSERVICE={env['PGSERVICE']} is in none of "
                f"{', '.join(map(str, service_files(env)))}: every connection will fail"
            )
        if "password" in section.settings:
            return f"the PGSERVICE section [{env['PGSERVICE']}] in {section.file}", None
        service = f"the PGSERVICE section [{env['PGSERVICE']}] ({section.file}) with "
    try:
        mode = stat.S_IMODE(passfile.stat().st_mode)
    except OSError:
        return (
            f"{service}no password file ({passfile} not found)",
            f"no PGPASSWORD and no {passfile}: connections work only without a password "
            "(peer or trust authentication)",
        )
    if mode & 0o077:
        return (
            f"{service}{passfile} (mode {mode:04o})",
            f"libpq ignores {passfile}: group or others can read it; fix: chmod 600 {passfile}",
        )
    if not os.access(passfile, os.R_OK):
        return f"{service}{passfile}", f"{passfile} is not readable by this user"
    return f"{service}{passfile} (mode {mode:04o})", None


def env_file_warnings(config: Config, runbook: Path) -> list[str]:
    """The environment file `init` put next to the runbook names the runbook and the state
    folder for cron and systemd. When this shell uses others, the jobs and this shell see
    different state (a restore-test record `check` cannot find): say so. Only those two
    non-secret lines are read."""
    path = runbook.parent / ENV_FILE_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    current = {"PRESKOOL_DR_RUNBOOK": runbook, "PRESKOOL_DR_STATE_DIR": config.state_dir}
    warnings = []
    for line in text.splitlines():
        key, sep, quoted = line.strip().partition("=")
        try:
            value = " ".join(shlex.split(quoted))  # the shell's and systemd's quoting
        except ValueError:
            continue
        if sep and key in current and value and Path(value) != current[key]:
            warnings.append(
                f"{path} sets {key}={value}, but this shell uses {current[key]}: the cron and "
                f"systemd jobs that load that file use {value}; to see what they see, run "
                f"`set -a; . {shlex.quote(str(path))}; set +a` first"
            )
    return warnings
