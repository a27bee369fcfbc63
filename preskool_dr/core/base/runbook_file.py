"""Which runbook.yaml is read, and whether it may be: the search order (never the current
directory) and the owner/mode checks, since its app commands run with every secret."""

from __future__ import annotations

import os
import pwd
import typing
from pathlib import Path

from preskool_dr.core.base.errors import ConfigError

DEFAULT_RUNBOOK_NAME = "runbook.yaml"


def shipped_runbook_path() -> Path:
    """The commented template that ships with preskool-dr (what the demo starts from and what
    a site copies to one of the places `find_runbook` looks, what `init` writes). It ships
    inside the package, so an installed wheel has it; never read implicitly."""
    return Path(__file__).resolve().parents[2] / "data" / DEFAULT_RUNBOOK_NAME


def runbook_search_path(env: typing.Mapping[str, str] | None = None) -> list[Path]:
    """The files looked at when neither --runbook nor PRESKOOL_DR_RUNBOOK names one, in order.

    Never the current directory: a runbook.yaml planted in /tmp (or any folder an operator
    happens to `cd` into) would have its app.stop argv run with every secret in the
    environment."""
    env = os.environ if env is None else env
    xdg = env.get("XDG_CONFIG_HOME", "")
    # the XDG spec: an unset, empty or relative XDG_CONFIG_HOME means ~/.config
    config_home = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".config"
    return [
        config_home / "preskool-dr" / DEFAULT_RUNBOOK_NAME,
        Path("/etc/preskool-dr") / DEFAULT_RUNBOOK_NAME,
    ]


def find_runbook(explicit: Path | None = None, env: typing.Mapping[str, str] | None = None) -> Path:
    """--runbook, else PRESKOOL_DR_RUNBOOK, else the first of `runbook_search_path` that
    exists. A path named explicitly is used even when missing (load_config then says so)."""
    env = os.environ if env is None else env
    if explicit is not None:
        return explicit
    named = env.get("PRESKOOL_DR_RUNBOOK")
    if named:
        return Path(named)
    candidates = runbook_search_path(env)
    for candidate in candidates:
        if candidate.exists():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise ConfigError(
        f"no runbook.yaml found: --runbook not given, PRESKOOL_DR_RUNBOOK not set, and none at "
        f"{looked} (the current directory is never searched); pass --runbook PATH, set "
        f"PRESKOOL_DR_RUNBOOK, or copy the template {shipped_runbook_path()} to "
        f"{candidates[0]} and edit it"
    )


def read_trusted(path: Path) -> str:
    """The runbook's text, read only when no one but its owner could have written it.

    Its app commands run with PGPASSWORD and the AWS keys in the environment, so a file that
    another local user can change is someone else's code. Refused: a file writable by group
    or others, and a file owned by a user other than root or the one running preskool-dr.
    The checks use the open file (fstat), so a swap after the check cannot slip through."""
    with path.open("rb") as handle:
        info = os.fstat(handle.fileno())
        me = os.geteuid()
        if info.st_uid not in (0, me):
            trusted = "root" if me == 0 else f"{_user_name(me)} or root"
            raise ConfigError(
                f"{path}: runbook refused: it is owned by {_user_name(info.st_uid)}, not by "
                f"{trusted}, and its app commands would run with this user's secrets; "
                f"check its content, then `chown {_user_name(me)} {path}`"
            )
        if info.st_mode & 0o022:
            who = (
                "group and others"
                if info.st_mode & 0o022 == 0o022
                else ("its group" if info.st_mode & 0o020 else "others")
            )
            raise ConfigError(
                f"{path}: runbook refused: it is writable by {who} (mode "
                f"{info.st_mode & 0o777:03o}), so another user could change the commands it "
                f"runs; check its content, then `chmod go-w {path}`"
            )
        data = handle.read()
    return data.decode("utf-8")


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
