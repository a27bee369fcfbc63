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
import pwd
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from preskool_dr.core.base.errors import ConfigError
from preskool_dr.core.base.libpq_service import check_service
from preskool_dr.core.base.paths import state_dir
from preskool_dr.core.base.steps import STEP_ID_LIST, StepId

DEFAULT_RUNBOOK_NAME = "runbook.yaml"


@dataclass(frozen=True)
class Range:
    """The numbers a runbook key accepts. A timeout of 0 or -5 seconds, port 70000 or a
    negative retention is a typo: refused at its line, never acted on (a 0-second timeout
    would fail every app command; a negative retention would delete every backup)."""

    low: float
    high: float = math.inf
    low_open: bool = False  # `low` itself is refused: "more than 0"
    note: str = ""  # what a value means, when that is not obvious

    def admits(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high

    def describe(self) -> str:
        if self.high != math.inf:
            text = f"from {self.low:g} to {self.high:g}"
        else:
            text = f"more than {self.low:g}" if self.low_open else f"{self.low:g} or more"
        return f"{text} ({self.note})" if self.note else text


def _within(
    default: Any, low: float, high: float = math.inf, *, low_open: bool = False, note: str = ""
) -> Any:
    """A dataclass field whose runbook value must lie in a Range (checked by `_Reader`)."""
    return field(default=default, metadata={"range": Range(low, high, low_open, note)})


@dataclass(frozen=True)
class StepText:
    """What the operator reads about one of the nine steps."""

    id: str
    title: str
    explain: str
    command: str


@dataclass(frozen=True)
class AppCommands:
    """Application control; every command is an argv list run without a shell."""

    stop: tuple[str, ...] = ()
    start: tuple[str, ...] = ()
    migrate: tuple[str, ...] = ()
    cwd: str | None = None
    health_url: str | None = None
    timeout_seconds: float = _within(300.0, 0, low_open=True)  # for each command
    # how long step 9 polls the health URL for a 2xx
    health_wait_seconds: float = _within(120.0, 0, low_open=True)


@dataclass(frozen=True)
class Retention:
    local_days: int | None = _within(None, 1)
    s3_days: int | None = _within(None, 1)
    storage_class: str = "STANDARD"


@dataclass(frozen=True)
class SmokeQuery:
    """A query that must return a single row; `min_value` checks its first column."""

    name: str
    sql: str
    min_value: float | None = None


@dataclass(frozen=True)
class Thresholds:
    rto_minutes: float = _within(120.0, 0, low_open=True)
    rpo_hours: float = _within(24.0, 0, low_open=True)
    rpo_wal_hours: float = _within(1.0, 0, low_open=True)
    backup_warn_age_hours: float = _within(25.0, 0, low_open=True)
    backup_missing_hours: float = _within(26.0, 0, low_open=True)
    min_backup_bytes: int = _within(1_048_576, 0)
    restore_test_max_age_days: float = _within(8.0, 0, low_open=True)


@dataclass(frozen=True)
class DatabaseSettings:
    host: str = "localhost"
    port: int = _within(5432, 1, 65535)
    name: str = "preskool_db"
    user: str = "preskool"
    admin_user: str = "postgres"
    admin_db: str = "postgres"

    @property
    def label(self) -> str:
        return f"{self.name}@{self.host}:{self.port}"


@dataclass(frozen=True)
class BackupSettings:
    dir: Path = Path("/var/backups/preskool")
    s3_bucket: str | None = None
    s3_prefix: str = "preskool-backups/"
    retention: dict[str, Retention] = field(default_factory=dict)
    compress_level: int = _within(6, 0, 9, note="gzip levels")


@dataclass(frozen=True)
class RestoreTestSettings:
    database: str = "preskool_restore_test"
    required_tables: tuple[str, ...] = ()
    smoke_queries: tuple[SmokeQuery, ...] = ()


RESTORE_METHODS = ("auto", "serial", "parallel")


@dataclass(frozen=True)
class RestoreSettings:
    """How step 6 loads a backup (see core/restore/loaders/parallel/ and core/restore/loaders/pg_restore.py)."""

    method: str = "auto"  # auto | parallel | serial (runbook.yaml says what each does)
    jobs: int = _within(0, 0, note="0 = one per CPU core")  # sessions for a parallel load


@dataclass(frozen=True)
class DrillSettings:
    target_db: str = "preskool_drill"
    app: AppCommands = AppCommands()
    sign_key: Path | None = None
    log: Path | None = None
    drop_after: bool = False
    allowed_signers: Path | None = None  # the drill log's trust root (drill-log verify)


@dataclass(frozen=True)
class NotifySettings:
    """Where events go (core/base/notify.py). URLs holding tokens belong in the environment
    (PRESKOOL_DR_NOTIFY_URLS, which wins over `urls`), not in the runbook."""

    urls: tuple[str, ...] = ()  # Apprise URLs: json://host:port/path, slack://..., mailto://...
    command: tuple[str, ...] = ()  # argv, no shell; the event as JSON in $PRESKOOL_DR_EVENT
    on_success: bool = False  # also a notification for each backup that succeeded
    timeout_seconds: float = _within(5.0, 0, 60, low_open=True, note="per delivery attempt")


@dataclass(frozen=True)
class Config:
    """Everything preskool-dr knows about the site; built by `load_config`."""

    source: Path | None
    database: DatabaseSettings
    backups: BackupSettings
    thresholds: Thresholds
    restore_test: RestoreTestSettings
    app: AppCommands
    drill: DrillSettings
    steps: tuple[StepText, ...]
    state_dir: Path
    restore: RestoreSettings = RestoreSettings()
    notify: NotifySettings = NotifySettings()

    def step(self, step_id: str) -> StepText:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    @property
    def drill_log_path(self) -> Path:
        return self.drill.log or self.state_dir / "drill-log.jsonl"


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
    """Converts parsed YAML into the dataclasses above, with file:line on every error."""

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


@dataclass(frozen=True)
class _File:
    """The shape of runbook.yaml itself (defaults come from the dataclasses above)."""

    version: int = 1
    database: DatabaseSettings = DatabaseSettings()
    backups: BackupSettings = BackupSettings()
    thresholds: Thresholds = Thresholds()
    restore_test: RestoreTestSettings = RestoreTestSettings()
    app: AppCommands = AppCommands()
    drill: DrillSettings = DrillSettings()
    restore: RestoreSettings = RestoreSettings()
    notify: NotifySettings = NotifySettings()
    steps: tuple[StepText, ...] = ()


# ---------------------------------------------------------------- loading


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


def _read_trusted(path: Path) -> str:
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


def load_config(path: Path | None = None, env: typing.Mapping[str, str] | None = None) -> Config:
    """Read runbook.yaml, validate it, and lay the environment over it (env wins)."""
    env = os.environ if env is None else env
    path = find_runbook(path, env)
    try:
        text = _read_trusted(path)
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
    parsed: _File = reader.build(_File, data, 1, "")
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
    return _apply_env(parsed, path, env)


def runbook_key_lines(path: Path) -> dict[str, int]:
    """Every key the runbook file sets, dotted (`database.port`), with its line: what
    `config check` shows as the source of a setting. Call after load_config accepted it."""
    data = yaml.load(_read_trusted(path), Loader=_loader_for(str(path)))  # noqa: S506
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


def _check_steps(reader: _Reader, parsed: _File, data: _Mapping) -> None:
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


def _check_restore(reader: _Reader, parsed: _File, data: _Mapping) -> None:
    section = data.get("restore")
    lines = section.key_lines if isinstance(section, _Mapping) else {}
    if parsed.restore.method not in RESTORE_METHODS:
        reader.fail(
            lines.get("method", 1),
            f"restore.method {parsed.restore.method!r}: use one of {', '.join(RESTORE_METHODS)}",
        )


def _check_thresholds(reader: _Reader, parsed: _File, data: _Mapping) -> None:
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


def _check_host(reader: _Reader, parsed: _File, data: _Mapping) -> None:
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


def _check_notify(reader: _Reader, parsed: _File, data: _Mapping) -> None:
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


def _check_retention(reader: _Reader, parsed: _File, data: _Mapping) -> None:
    backups = data.get("backups")
    retention = backups.get("retention") if isinstance(backups, _Mapping) else None
    for kind in parsed.backups.retention:
        if kind not in ("daily", "weekly", "pre-deploy", "base"):
            line = retention.key_lines[kind] if isinstance(retention, _Mapping) else 1
            reader.fail(
                line,
                f"backups.retention.{kind}: unknown backup kind (daily, weekly, pre-deploy, base)",
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
}


def _apply_env(parsed: _File, path: Path, env: typing.Mapping[str, str]) -> Config:
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
        steps=parsed.steps,
        state_dir=Path(explicit_state) if explicit_state else state_dir(),
    )
