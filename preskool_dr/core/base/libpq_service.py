"""PGSERVICE: a libpq service section may give the password, TLS and similar settings, never
where to connect.

libpq lets a service section win over the PGHOST/PGPORT/PGUSER/PGDATABASE variables that
preskool-dr hands psql, pg_dump and pg_restore, while the tool's own connections name those
explicitly. A section with `dbname=preskool_db` would therefore send a drill's or a restore
test's psql into production while the tool checks the drill database. So a section that
names host, hostaddr, port, dbname or user is refused at its file and line; the runbook and
DB_* say where to connect.
"""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass
from pathlib import Path

from preskool_dr.core.base.errors import ConfigError

# what the runbook and DB_* decide, never a service section
TARGET_KEYS = ("host", "hostaddr", "port", "dbname", "user")
# where libpq looks for the system-wide file when PGSYSCONFDIR is not set: its build's
# sysconfdir (Debian/Ubuntu packages, then the PGDG RPMs)
SYSTEM_CONF_DIRS = (Path("/etc/postgresql-common"), Path("/etc/sysconfig/pgsql"))


@dataclass(frozen=True)
class ServiceSection:
    file: Path
    line: int  # of the `[name]` header
    settings: dict[str, tuple[str, int]]  # key -> (value, line)


def service_files(env: typing.Mapping[str, str]) -> list[Path]:
    """The files libpq reads for a service, in its order: the user's, then the system's."""
    user = Path(env["PGSERVICEFILE"]) if env.get("PGSERVICEFILE") else None
    if user is None:
        home = env.get("HOME") or str(Path.home())
        user = Path(home) / ".pg_service.conf"
    if env.get("PGSYSCONFDIR"):
        system = [Path(env["PGSYSCONFDIR"]) / "pg_service.conf"]
    else:
        system = [folder / "pg_service.conf" for folder in SYSTEM_CONF_DIRS]
    return [user, *system]


def find_service(name: str, env: typing.Mapping[str, str]) -> ServiceSection | None:
    """The first `[name]` section in service_files, as libpq picks it; None when absent."""
    for path in service_files(env):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        section = _parse_section(path, text, name)
        if section is not None:
            return section
    return None


def _parse_section(path: Path, text: str, name: str) -> ServiceSection | None:
    current: ServiceSection | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            if current is not None:
                return current
            if line.rstrip("]")[1:] == name:
                current = ServiceSection(path, number, {})
            continue
        if current is not None and "=" in line:
            key, _, value = line.partition("=")
            current.settings[key.strip()] = (value.strip(), number)
    return current


def check_service(env: typing.Mapping[str, str] | None = None) -> ServiceSection | None:
    """The PGSERVICE section in use (None without PGSERVICE or when no file holds it);
    ConfigError at its line when it names where to connect."""
    env = os.environ if env is None else env
    name = env.get("PGSERVICE")
    if not name:
        return None
    section = find_service(name, env)
    if section is None:
        return None
    for key in TARGET_KEYS:
        if key in section.settings:
            _value, line = section.settings[key]
            raise ConfigError(
                f"{section.file}:{line}: the PGSERVICE section [{name}] sets {key}; a "
                "service section may hold the password, sslmode and similar settings, but "
                "where to connect (host, hostaddr, port, dbname, user) comes from the runbook "
                "and DB_HOST/DB_PORT/DB_NAME/DB_USER: libpq would let the section win over "
                "them for psql and pg_dump and send a restore to the wrong database. Move "
                f"that line to the runbook (or DB_*), or unset PGSERVICE"
            )
    return section
