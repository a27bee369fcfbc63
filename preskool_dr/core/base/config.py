"""runbook.yaml + environment -> one immutable, typed Config.

Every validation error names the file and line it comes from, because the operator who
reads it is usually fixing the file under pressure. Secrets never enter a Config:
PGPASSWORD and the AWS keys stay in the environment, where libpq, boto3 and the child
processes read them directly.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from preskool_dr.core.base.age import IDENTITY_ENV, recipient_problem
from preskool_dr.core.base.errors import ConfigError
from preskool_dr.core.base.libpq_service import check_service
from preskool_dr.core.base.paths import state_dir
from preskool_dr.core.base.runbook_file import find_runbook, read_trusted
from preskool_dr.core.base.settings import (
    MEMORY_SIZE,
    OBJECT_LOCK_MODES,
    RESTORE_METHODS,
    Config,
    RunbookFile,
)
from preskool_dr.core.base.steps import STEP_ID_LIST, StepId

# ---------------------------------------------------------------- YAML with line numbers


class _Mapping(dict[str, Any]):
    """A YAML mapping that remembers the line of each key (1-based) and of itself."""

    line: int = 0
    key_lines: dict[str, int]


class _Sequence(list[Any]):
    line: int = 0


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _Mapping:
    result = _Mapping()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise ConfigError(
                f"{loader.name}:{key_node.start_mark.line + 1}: keys must be text, got {key!r}"
            )
        if key in result:
            raise ConfigError(
                f"{loader.name}:{key_node.start_mark.line + 1}: duplicate key {key!r}"
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> _Sequence:
    result = _Sequence(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


# ---------------------------------------------------------------- typed conversion


class _Reader:
    """Converts parsed YAML into the records of core/base/settings.py, with file:line on every
    error."""

    def __init__(self, file: str, base_dir: Path) -> None:
        self.file = file
        self.base_dir = base_dir

    def fail(self, line: int, message: str) -> typing.NoReturn:
        raise ConfigError(f"{self.file}:{line}: {message}")

    def build(self, cls: type[Any], data: Any, line: int, where: str) -> Any:
        if not isinstance(data, _Mapping):
            self.fail(line, f"{where or 'the file'} must be a mapping, got {_kind(data)}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        names = set(fields)
        unknown = [key for key in data if key not in names]
        if unknown:
            key = unknown[0]
            self.fail(
                data.key_lines[key],
                f"unknown key {where}.{key} (allowed: {', '.join(sorted(names))})",
            )
        kwargs = {}
        for key, value in data.items():
            name = f"{where}.{key}".lstrip(".")
            kwargs[key] = self.convert(hints[key], value, data.key_lines[key], name)
            bounds = fields[key].metadata.get("range")
            if bounds is not None and kwargs[key] is not None and not bounds.admits(kwargs[key]):
                self.fail(data.key_lines[key], f"{name} must be {bounds.describe()}, got {value}")
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.init
            and f.name not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            self.fail(data.line, f"{where or 'the file'} is missing required key {missing[0]!r}")
        return cls(**kwargs)

    def convert(self, hint: Any, value: Any, line: int, where: str) -> Any:
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin in (typing.Union, types.UnionType):
            if value is None and type(None) in args:
                return None
            (inner,) = [a for a in args if a is not type(None)]
            return self.convert(inner, value, line, where)
        if dataclasses.is_dataclass(hint):
            return self.build(typing.cast(type, hint), value, line, where)
        if origin is tuple:
            if not isinstance(value, list):
                self.fail(line, f"{where} must be a list, got {_kind(value)}")
            item_line = getattr(value, "line", line)
            return tuple(self.convert(args[0], item, item_line, f"{where}[]") for item in value)
        if origin is dict:
            if not isinstance(value, _Mapping):
                self.fail(line, f"{where} must be a mapping, got {_kind(value)}")
            return {
                k: self.convert(args[1], v, value.key_lines[k], f"{where}.{k}")
                for k, v in value.items()
            }
        if hint is Path:
            if not isinstance(value, str) or not value:
                self.fail(line, f"{where} must be a path, got {_kind(value)}")
            return (self.base_dir / Path(value).expanduser()).resolve()
        if hint is bool:
            if not isinstance(value, bool):
                self.fail(line, f"{where} must be true or false, got {_kind(value)}")
            return value
        if hint is int:
            if isinstance(value, bool) or not isinstance(value, int):
                self.fail(line, f"{where} must be a whole number, got {_kind(value)}")
            return value
        if hint is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.fail(line, f"{where} must be a number, got {_kind(value)}")
            if not math.isfinite(value):  # YAML's .inf and .nan
                self.fail(line, f"{where} must be a finite number, got {value}")
            return float(value)
        if hint is str:
            if not isinstance(value, str) or not value.strip():
                self.fail(line, f"{where} must be non-empty text, got {_kind(value)}")
            return value
        raise TypeError(f"config type {hint!r} not handled")  # a programming error


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"text {value!r}" if value.strip() else "empty text"
    return f"{type(value).__name__} {value!r}"


# ---------------------------------------------------------------- loading


def load_config(path: Path | None = None, env: typing.Mapping[str, str] | None = None) -> Config:
    """Read runbook.yaml, validate it, and lay the environment over it (env wins)."""
    env = os.environ if env is None else env
    path = find_runbook(path, env)
    try:
        text = read_trusted(path)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: runbook file not found; pass --runbook PATH or set PRESKOOL_DR_RUNBOOK"
        ) from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}): "
            "save the file as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read runbook file: {exc}") from None
    try:
        data = yaml.load(text, Loader=_loader_for(str(path)))  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        context = ""
        if exc.context and exc.context_mark and exc.context_mark.line + 1 != line:
            context = f" ({exc.context} that starts on line {exc.context_mark.line + 1})"
        raise ConfigError(f"{path}:{line}: invalid YAML: {exc.problem or exc}{context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}:1: invalid YAML: {exc}") from None
    if data is None:
        data = _Mapping()
        data.line, data.key_lines = 1, {}
    reader = _Reader(str(path), path.resolve().parent)
    parsed: RunbookFile = reader.build(RunbookFile, data, 1, "")
    if parsed.version != 1:
        reader.fail(
            data.key_lines.get("version", 1), f"version {parsed.version} is not supported (use 1)"
        )
    _check_steps(reader, parsed, data)
    _check_retention(reader, parsed, data)
    _check_restore(reader, parsed, data)
    _check_thresholds(reader, parsed, data)
    _check_host(reader, parsed, data)
    _check_notify(reader, parsed, data)
    _check_encryption(reader, parsed, data)
    _check_object_lock(reader, parsed, data)
    return _apply_env(parsed, path, env)


def runbook_key_lines(path: Path) -> dict[str, int]:
    """Every key the runbook file sets, dotted (`database.port`), with its line: what
    `config check` shows as the source of a setting. Call after load_config accepted it."""
    data = yaml.load(read_trusted(path), Loader=_loader_for(str(path)))  # noqa: S506
    lines: dict[str, int] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, _Mapping):
            for key, value in node.items():
                lines[prefix + key] = node.key_lines[key]
                walk(value, f"{prefix}{key}.")

    walk(data, "")
    return lines


def _loader_for(name: str) -> type[_Loader]:
    class Named(_Loader):
        def __init__(self, stream: Any) -> None:
            super().__init__(stream)
            self.name = name

    return Named


def _check_steps(reader: _Reader, parsed: RunbookFile, data: _Mapping) -> None:
    line = data.key_lines.get("steps", 1)
    ids = [s.id for s in parsed.steps]
    # each step's own `id:` line: the operator fixes that line, not the `steps:` header
    lines = [item.key_lines.get("id", item.line) for item in data.get("steps") or ()]
    for step_id, at in zip(ids, lines, strict=True):
        if StepId.known(step_id) is None:
            reader.fail(at, f"unknown step id {step_id!r} (the nine steps are: {STEP_ID_LIST})")
    for step_id, expected, at in zip(ids, StepId, lines, strict=False):
        if step_id != expected:
            reader.fail(
                at,
                f"step {expected.value!r} belongs here: the steps are, in order, {STEP_ID_LIST}",
            )
    if tuple(ids) != tuple(StepId):
        reader.fail(line, f"steps must list the nine steps in order: {STEP_ID_LIST}")


def _check_restore(reader: _Reader, parsed: RunbookFile, data: _Mapping) -> None:
    section = data.get("restore")
    lines = section.key_lines if isinstance(section, _Mapping) else {}
    if parsed.restore.method not in RESTORE_METHODS:
        reader.fail(
            lines.get("method", 1),
            f"restore.method {parsed.restore.method!r}: use one of {', '.join(RESTORE_METHODS)}",
        )
    memory = parsed.restore.maintenance_work_mem
    if memory is not None and not MEMORY_SIZE.fullmatch(memory):
        reader.fail(
            lines.get("maintenance_work_mem", 1),
            f"restore.maintenance_work_mem {memory!r}: write a size such as 512MB or 2GB "
            "(kB, MB or GB), or null to keep the server's own setting",
        )


def _check_thresholds(reader: _Reader, parsed: RunbookFile, data: _Mapping) -> None:
    t = parsed.thresholds
    if t.backup_missing_hours < t.backup_warn_age_hours:  # CRITICAL would come before WARNING
        section = data.get("thresholds")
        lines = section.key_lines if isinstance(section, _Mapping) else {}
        reader.fail(
            lines.get("backup_missing_hours", lines.get("backup_warn_age_hours", 1)),
            f"thresholds.backup_missing_hours ({t.backup_missing_hours:g}) must be at least "
            f"thresholds.backup_warn_age_hours ({t.backup_warn_age_hours:g})",
        )


# One DNS label: letters, digits, hyphens (underscores too: compose service names use them).
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?", re.ASCII)
# A socket folder: an absolute path of plain characters (no spaces, `=`, `@`, quotes).
_SOCKET_DIR = re.compile(r"/[A-Za-z0-9._/+-]*", re.ASCII)


def host_problem(host: str) -> str | None:
    """Why `host` is not a plain host name, IP address or absolute socket folder, or None.

    The host goes into lock names, the run journal and the drill log, and to libpq as a
    separate keyword: a URI or key=value text (`postgresql://u:p@h/db`, `h password=x`) would
    carry a password into those files or point libpq somewhere the operator did not read."""
    if host.startswith("/"):
        return None if _SOCKET_DIR.fullmatch(host) else "a socket folder of plain characters"
    address, _, zone = host.partition("%")  # an IPv6 zone: fe80::1%eth0
    try:
        version = ipaddress.ip_address(address).version
        if not zone or (version == 6 and _HOST_LABEL.fullmatch(zone)):
            return None
    except ValueError:
        pass
    labels = host.split(".")
    if len(host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels):
        return None
    return "a host name, an IP address or an absolute socket folder"


def _check_host(reader: _Reader, parsed: RunbookFile, data: _Mapping) -> None:
    problem = host_problem(parsed.database.host)
    if problem:
        section = data.get("database")
        lines = section.key_lines if isinstance(section, _Mapping) else {}
        reader.fail(
            lines.get("host", 1),
            f"database.host must be {problem} (no URI, user@, spaces or key=value settings; "
            "the password belongs in PGPASSWORD or ~/.pgpass)",
        )


# An Apprise URL starts with its service's scheme: json://, slack://, mailtos://, pagerduty://
_NOTIFY_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.ASCII | re.IGNORECASE)


def _check_notify(reader: _Reader, parsed: RunbookFile, data: _Mapping) -> None:
    section = data.get("notify")
    urls = section.get("urls") if isinstance(section, _Mapping) else None
    for number, url in enumerate(parsed.notify.urls):
        if not _NOTIFY_URL.fullmatch(url):
            line = getattr(urls, "line", 1) + number  # one `- url` per line below `urls:`
            # the text itself is not repeated: a mistyped URL may still hold a token
            reader.fail(
                line,
                f"notify.urls[{number}] is not a notification URL like json://HOST:PORT/PATH "
                "or slack://TOKENS (scheme://, no spaces)",
            )


def _check_retention(reader: _Reader, parsed: RunbookFile, data: _Mapping) -> None:
    backups = data.get("backups")
    retention = backups.get("retention") if isinstance(backups, _Mapping) else None
    for kind in parsed.backups.retention:
        if kind not in ("daily", "weekly", "pre-deploy", "base"):
            line = retention.key_lines[kind] if isinstance(retention, _Mapping) else 1
            reader.fail(
                line,
                f"backups.retention.{kind}: unknown backup kind (daily, weekly, pre-deploy, base)",
            )


def _check_encryption(reader: _Reader, parsed: RunbookFile, data: _Mapping) -> None:
    section = data.get("encryption")
    if not isinstance(section, _Mapping):
        return
    listed = section.get("recipients")
    if not parsed.encryption.recipients:
        # an `encryption:` section that encrypts to nobody would write clear text
        reader.fail(
            section.key_lines.get("recipients", section.line),
            "encryption.recipients must list at least one age recipient (age1..., "
            "ssh-ed25519 ... or ssh-rsa ...); remove the encryption section to write clear text",
        )
    for number, text in enumerate(parsed.encryption.recipients):
        problem = recipient_problem(text)
        if problem is not None:
            line = getattr(listed, "line", 1) + number  # one `- recipient` per line
            reader.fail(line, f"encryption.recipients[{number}]: {problem}")


def _check_object_lock(reader: _Reader, parsed: RunbookFile, data: _Mapping) -> None:
    lock = parsed.backups.object_lock
    if lock is None or lock.mode in OBJECT_LOCK_MODES:
        return
    backups = data.get("backups")
    section = backups.get("object_lock") if isinstance(backups, _Mapping) else None
    line = section.key_lines.get("mode", section.line) if isinstance(section, _Mapping) else 1
    reader.fail(
        line,
        f"backups.object_lock.mode {lock.mode!r}: use GOVERNANCE or COMPLIANCE "
        "(S3 Object Lock retention modes)",
    )


# The runbook keys the environment wins over (see _apply_env), for `config check`.
ENV_OVERRIDES = {
    "database.host": "DB_HOST",
    "database.port": "DB_PORT",
    "database.name": "DB_NAME",
    "database.user": "DB_USER",
    "database.admin_user": "DB_ADMIN_USER",
    "backups.dir": "BACKUP_DIR",
    "backups.s3_bucket": "S3_BUCKET",
    "encryption.identity": IDENTITY_ENV,
}


def _apply_env(parsed: RunbookFile, path: Path, env: typing.Mapping[str, str]) -> Config:
    check_service(env)  # a PGSERVICE section must not say where psql and pg_dump connect
    db = parsed.database
    overrides: dict[str, Any] = {}
    for var, key in (("DB_HOST", "host"), ("DB_NAME", "name"), ("DB_USER", "user")):
        if env.get(var):
            overrides[key] = env[var]
    if env.get("DB_PORT"):
        try:
            overrides["port"] = int(env["DB_PORT"])
        except ValueError:
            overrides["port"] = 0
        if not 1 <= overrides["port"] <= 65535:
            raise ConfigError(
                f"environment: DB_PORT must be a port number, got {env['DB_PORT']!r} "
                "(ports run from 1 to 65535)"
            )
    if "host" in overrides and (problem := host_problem(overrides["host"])):
        # the value itself is not repeated: it may hold a password
        raise ConfigError(
            f"environment: DB_HOST must be {problem}; it holds something else (a URI, user@, "
            "spaces or key=value settings?). Set DB_HOST to the server's name or address only, "
            "DB_PORT/DB_USER/DB_NAME separately, and the password in PGPASSWORD or ~/.pgpass"
        )
    if env.get("DB_ADMIN_USER"):
        overrides["admin_user"] = env["DB_ADMIN_USER"]
    db = dataclasses.replace(db, **overrides)
    backups = parsed.backups
    if env.get("BACKUP_DIR"):
        backups = dataclasses.replace(backups, dir=Path(env["BACKUP_DIR"]).expanduser().resolve())
    if env.get("S3_BUCKET"):
        backups = dataclasses.replace(backups, s3_bucket=env["S3_BUCKET"])
    encryption = parsed.encryption
    if env.get(IDENTITY_ENV):
        identity = Path(env[IDENTITY_ENV]).expanduser().resolve()
        encryption = dataclasses.replace(encryption, identity=identity)
    explicit_state = env.get("PRESKOOL_DR_STATE_DIR")
    return Config(
        source=path,
        database=db,
        backups=backups,
        thresholds=parsed.thresholds,
        restore_test=parsed.restore_test,
        app=parsed.app,
        drill=parsed.drill,
        restore=parsed.restore,
        notify=parsed.notify,
        encryption=encryption,
        steps=parsed.steps,
        state_dir=Path(explicit_state) if explicit_state else parsed.state_dir or state_dir(),
        runbook_state_dir=parsed.state_dir,
    )
