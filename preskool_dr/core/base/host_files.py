"""Where an install on the database host keeps its files, shared by `init` (which writes
them) and `schedule` (whose units and cron lines point at them).

The environment file holds the secrets cron and systemd jobs need (PGPASSWORD, AWS keys,
notification URLs) as `KEY=value` lines, mode 0600; the runbook never holds them.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path

SYSTEM_CONFIG_DIR = Path("/etc/preskool-dr")
ENVIRONMENT_FILE_NAME = "preskool-dr.env"


def user_config_dir(env: typing.Mapping[str, str] | None = None) -> Path:
    """`$XDG_CONFIG_HOME/preskool-dr`; an unset, empty or relative XDG_CONFIG_HOME means
    ~/.config (the XDG spec)."""
    env = os.environ if env is None else env
    xdg = env.get("XDG_CONFIG_HOME", "")
    config_home = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".config"
    return config_home / "preskool-dr"


def environment_file(
    env: typing.Mapping[str, str] | None = None, *, euid: int | None = None
) -> Path:
    """The 0600 environment file: /etc/preskool-dr/preskool-dr.env for root (a system
    install), `$XDG_CONFIG_HOME/preskool-dr/preskool-dr.env` for anyone else."""
    euid = os.geteuid() if euid is None else euid
    folder = SYSTEM_CONFIG_DIR if euid == 0 else user_config_dir(env)
    return folder / ENVIRONMENT_FILE_NAME


def read_environment_file(path: Path) -> dict[str, str]:
    """The `KEY=value` settings of an environment file, as systemd's EnvironmentFile= reads
    the simple cases: blank lines and `#` comments skipped, an optional `export `, one pair
    of surrounding quotes removed. {} when the file is missing or not readable by this user."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values
