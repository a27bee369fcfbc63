"""The DR drill log: JSON Lines, append-only, hash-chained and SSH-signed.

Every line names the SHA-256 of the line before it (`prev_sha256`), so a removed,
inserted or reordered line breaks the chain at that point; every line carries an SSH
signature over its canonical JSON, so a changed field breaks the signature. Lines are
never edited: a late signature (`"type": "sign"`) and the ops lead's countersignature
(`"type": "countersign"`) are new lines that name the entry's SHA-256.

Appends hold an flock on the log file itself, read the last line under it, and write the
new line with one write() on an O_APPEND descriptor, then fsync. A crash can still leave
a torn last line; appends then refuse (chaining onto garbage would bless it) and
`repair_log` sets the fragment aside.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from preskool_dr import __version__
from preskool_dr.core.base.errors import DrError, NotFoundError, UsageError
from preskool_dr.core.base.events import utcnow
from preskool_dr.core.base.paths import ensure_private_dir
from preskool_dr.core.base.safe_text import escape_control
from preskool_dr.core.drill.signing import (
    NAMESPACE,
    SignatureCheck,
    SigningError,
    SigningKey,
    TrustRoot,
    check_content,
    sign,
    trust_root,
    verify,
)
from preskool_dr.core.restore.journal import JOURNAL_FOLDERS

LOG_VERSION = 1
ZERO_SHA256 = "0" * 64
DRILL, SIGN, COUNTERSIGN = "drill", "sign", "countersign"
# What the contract requires of a drill entry besides what append_entry adds itself.
DRILL_FIELDS = (
    "performed_by",
    "backup",
    "backup_md5",
    "incident_declared_at",
    "app_accessible_at",
    "rto_seconds",
    "rpo_seconds",
    "result",
    "steps",
)
_ADDED_FIELDS = ("type", "version", "prev_sha256", "signer", "signature")
_REQUIRED = {
    DRILL: ("version", "date", *DRILL_FIELDS, "prev_sha256", "signer", "signature"),
    SIGN: ("entry_sha256", "date", "prev_sha256", "signer", "signature"),
    COUNTERSIGN: ("entry_sha256", "date", "prev_sha256", "signer", "signature"),
}
NO_KEY_HINT = (
    "no signing key: pass --sign-key PATH, set drill.sign_key in runbook.yaml, "
    "or load a key into ssh-agent"
)
ALLOWED_SIGNERS_EXAMPLE = f'alice namespaces="{NAMESPACE}" ssh-ed25519 AAAA...'
MARKDOWN_HEADER = "| Date | Performed By | Backup Used | RTO Achieved | RPO Window | Result |"
MARKDOWN_SEPARATOR = "|------|-------------|-------------|--------------|------------|--------|"


class TornLogError(DrError):
    """The log ends in an incomplete or unreadable line; nothing was appended."""


# ---------------------------------------------------------------- lines


@dataclass(frozen=True)
class LogRecord:
    """One line of the log as read: its bytes (without newline), hash and parsed object."""

    number: int  # 1-based
    raw: bytes
    sha256: str
    data: dict[str, Any] | None  # None when the line is not a JSON object
    error: str | None = None  # why data is None
    complete: bool = True  # False: the file ends without a newline after this line

    @property
    def type(self) -> str | None:
        value = self.data.get("type") if self.data else None
        return value if isinstance(value, str) else None

    def get(self, name: str) -> Any:
        return self.data.get(name) if self.data else None


def canonical_bytes(entry: Mapping[str, Any]) -> bytes:
    """What a signature covers: the entry without its `signature` key, canonical JSON."""
    body = {k: v for k, v in entry.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_hex(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def parse_log(content: bytes) -> list[LogRecord]:
    records: list[LogRecord] = []
    lines = content.split(b"\n")
    complete_count = len(lines) - 1  # the piece after the last newline is incomplete
    for index, raw in enumerate(lines):
        if index == complete_count and not raw:
            break
        data, error = _parse_line(raw)
        records.append(
            LogRecord(index + 1, raw, sha256_hex(raw), data, error, index < complete_count)
        )
    return records


def _parse_line(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    if not raw.strip():
        return None, "empty line"
    try:
        data = json.loads(raw, object_pairs_hook=_unique_keys)
    except ValueError as exc:
        return None, f"not valid JSON ({exc})"
    if not isinstance(data, dict):
        return None, "not a JSON object"
    return data, None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A repeated key would let the bytes say one thing and the parsed entry another.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {key!r} appears twice")
        result[key] = value
    return result


def read_log(path: Path) -> list[LogRecord]:
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(
            f"no drill log at {path}: a drill (`preskool-dr restore BACKUP --drill ...`) "
            "creates it; pass --drill-log PATH for another file"
        ) from None
    except OSError as exc:
        raise DrError(f"cannot read the drill log {path}: {exc.strerror}") from None
    return parse_log(content)


def _require_log(path: Path) -> None:
    if not path.exists():
        read_log(path)  # raises the NotFoundError with its hint


def find_entry(path: Path, records: list[LogRecord], ref: str) -> LogRecord:
    """A drill entry by line number (`3`, `#3`) or by a unique sha256 prefix (6+ hex)."""
    text = ref.strip().lstrip("#").lower()
    if text.isdigit() and len(text) < 6:
        number = int(text)
        if not 1 <= number <= len(records):
            raise NotFoundError(f"{path} has no line {number} (it has {len(records)} lines)")
        record = records[number - 1]
    elif re.fullmatch(r"[0-9a-f]{6,64}", text):
        matches = [r for r in records if r.sha256.startswith(text)]
        if not matches:
            raise NotFoundError(f"no line of {path} has a sha256 starting with {text}")
        if len(matches) > 1:
            lines = ", ".join(str(r.number) for r in matches)
            raise UsageError(f"sha256 prefix {text} matches lines {lines}: give more digits")
        record = matches[0]
    else:
        raise UsageError(
            f"ENTRY {ref!r} is neither a line number nor 6+ hex digits of an entry's sha256 "
            "(`preskool-dr drill-log show` prints both)"
        )
    if record.type != DRILL:
        what = f"a {record.type!r} line" if record.type else "not a valid entry"
        raise UsageError(f"line {record.number} of {path} is {what}, not a drill entry")
    return record


# ---------------------------------------------------------------- appending


@dataclass(frozen=True)
class AppendResult:
    """A line now in the log; `message` is the one line to show the operator."""

    path: Path
    line: int
    sha256: str
    entry: dict[str, Any]
    signed: bool
    message: str


def append_entry(
    path: Path,
    fields: Mapping[str, Any],
    *,
    signer: str,
    key: SigningKey | None,
    interactive: bool = False,
) -> AppendResult:
    """Record one drill. For the drill runner.

    `fields` holds at least DRILL_FIELDS (values may be null when unknown, e.g. a failed
    drill has no `app_accessible_at`) plus anything useful (target database, host, RTO/RPO
    targets and verdicts, validation results); datetimes become ISO-8601 UTC text.
    `date` defaults to now. The entry is appended even when signing fails (no key, a
    passphrase with no terminal): the record matters more than the moment of signing, and
    `result.message` says how to sign it later. interactive=True lets ssh-keygen ask for a
    passphrase on the terminal (the TUI must suspend itself around this call).
    Raises TornLogError when the log ends in a torn line (the message says how to repair).
    """
    if not signer.strip():
        raise ValueError("append_entry needs the signer principal")
    taken = [k for k in _ADDED_FIELDS if k in fields]
    missing = [k for k in DRILL_FIELDS if k not in fields]
    if taken or missing:
        raise ValueError(f"drill entry fields: missing {missing}, reserved {taken}")
    body = _jsonable(fields)
    entry: dict[str, Any] = {"type": DRILL, "version": LOG_VERSION, "date": _iso(utcnow())}
    entry.update(body)
    entry.setdefault("tool_version", __version__)
    entry["signer"] = signer
    line, sha, final, sign_error = _locked_append(
        path, lambda _records: entry, key, interactive, must_sign=False
    )
    if final["signature"] is not None:
        message = f"drill recorded at line {line} of {path} ({sha[:12]}), signed by {signer}"
    else:
        message = (
            f"drill recorded at line {line} of {path} ({sha[:12]}) UNSIGNED: "
            f"{sign_error or NO_KEY_HINT}; sign it later with "
            f"`preskool-dr drill-log sign {line} --drill-log {path}`"
        )
    return AppendResult(path, line, sha, final, final["signature"] is not None, message)


def sign_entry(
    path: Path,
    ref: str,
    *,
    key: SigningKey | None,
    signer: str | None = None,
    interactive: bool = False,
) -> AppendResult:
    """Sign an entry recorded unsigned: a `"type": "sign"` line naming its sha256."""

    def build(records: list[LogRecord]) -> dict[str, Any]:
        target = find_entry(path, records, ref)
        if target.get("signature") is not None:
            raise UsageError(
                f"line {target.number} is already signed by "
                f"{escape_control(target.get('signer'))}; "
                "a sign-off by someone else is `preskool-dr drill-log countersign`"
            )
        late = _signature_lines(records, target, SIGN)
        if late:
            raise UsageError(
                f"line {target.number} was already signed by "
                f"{escape_control(late[0].get('signer'))} "
                f"on line {late[0].number}"
            )
        return _signature_line(SIGN, target, signer or str(target.get("signer")))

    return _append_signature(path, build, key, interactive)


def countersign_entry(
    path: Path,
    ref: str,
    *,
    signer: str,
    key: SigningKey | None,
    interactive: bool = False,
) -> AppendResult:
    """The ops lead's sign-off: a `"type": "countersign"` line naming the entry's sha256."""

    def build(records: list[LogRecord]) -> dict[str, Any]:
        target = find_entry(path, records, ref)
        for record in _signature_lines(records, target, COUNTERSIGN):
            if record.get("signer") == signer:
                raise UsageError(
                    f"line {target.number} is already countersigned by {signer} "
                    f"on line {record.number}"
                )
        return _signature_line(COUNTERSIGN, target, signer)

    return _append_signature(path, build, key, interactive)


def _signature_lines(records: list[LogRecord], target: LogRecord, kind: str) -> list[LogRecord]:
    return [r for r in records if r.type == kind and r.get("entry_sha256") == target.sha256]


def _signature_line(kind: str, target: LogRecord, signer: str) -> dict[str, Any]:
    if not signer.strip():
        raise UsageError("name the signer with --signer NAME (their allowed_signers principal)")
    return {
        "type": kind,
        "version": LOG_VERSION,
        "date": _iso(utcnow()),
        "entry_sha256": target.sha256,
        "entry_line": target.number,  # a reading aid; entry_sha256 is what is trusted
        "signer": signer,
    }


def _append_signature(
    path: Path,
    build: Callable[[list[LogRecord]], dict[str, Any]],
    key: SigningKey | None,
    interactive: bool,
) -> AppendResult:
    if key is None:
        raise UsageError(f"cannot sign: {NO_KEY_HINT}")
    _require_log(path)
    line, sha, entry, _ = _locked_append(path, build, key, interactive, must_sign=True)
    what = "signature" if entry["type"] == SIGN else "countersignature"
    message = (
        f"{what} by {entry['signer']} for line {entry['entry_line']} recorded at line {line} "
        f"of {path} ({sha[:12]})"
    )
    return AppendResult(path, line, sha, entry, True, message)


def _locked_append(
    path: Path,
    build: Callable[[list[LogRecord]], dict[str, Any]],
    key: SigningKey | None,
    interactive: bool,
    *,
    must_sign: bool,
) -> tuple[int, str, dict[str, Any], str | None]:
    """Under the lock: read, refuse a torn tail, chain, sign, write once, fsync."""
    ensure_private_dir(path.parent)
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        # Held while signing too: the signature covers prev_sha256, which another append
        # would change. Drills are rare, so a second appender waiting is fine.
        fcntl.flock(fd, fcntl.LOCK_EX)
        if created:
            _fsync_dir(path.parent)
        records = parse_log(_read_all(fd))
        _refuse_bad_tail(path, records)
        entry = dict(build(records))
        entry["prev_sha256"] = records[-1].sha256 if records else ZERO_SHA256
        entry["signature"] = None
        sign_error: str | None = None
        if key is not None:
            try:
                entry["signature"] = sign(canonical_bytes(entry), key, interactive=interactive)
            except SigningError as exc:
                if must_sign:
                    raise
                sign_error = str(exc)
        raw = json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode()
        try:
            written = os.write(fd, raw + b"\n")
        except OSError as exc:
            raise DrError(f"cannot write to {path}: {exc.strerror}; nothing was appended") from None
        if written != len(raw) + 1:
            raise TornLogError(
                f"only {written} of {len(raw) + 1} bytes reached {path} (disk full?); "
                f"free space, then run `preskool-dr drill-log repair --drill-log {path}`"
            )
        os.fsync(fd)
    finally:
        os.close(fd)  # also releases the lock
    return len(records) + 1, sha256_hex(raw), entry, sign_error


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _refuse_bad_tail(path: Path, records: list[LogRecord]) -> None:
    if not records:
        return
    last = records[-1]
    if not last.complete:
        raise TornLogError(
            f"{path} ends with an incomplete line {last.number} ({len(last.raw)} bytes, "
            "an interrupted write); nothing was appended: run "
            f"`preskool-dr drill-log repair --drill-log {path}`, then retry"
        )
    if last.data is None:
        raise TornLogError(
            f"the last line ({last.number}) of {path} is {last.error}: the file was damaged "
            f"or edited; nothing was appended: run `preskool-dr drill-log verify --drill-log "
            f"{path}` and restore the file from a copy"
        )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _jsonable(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Plain JSON values, so what is signed is exactly what a reader parses back."""

    def convert(value: Any) -> Any:
        if isinstance(value, datetime):
            return _iso(value)
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, Path):
            return str(value)
        raise TypeError(f"drill entry value {value!r} is not JSON")

    result: dict[str, Any] = json.loads(json.dumps(dict(fields), default=convert, allow_nan=False))
    return result


# ---------------------------------------------------------------- repair


@dataclass(frozen=True)
class RepairResult:
    path: Path
    line: int
    fragment_bytes: int
    moved_to: Path | None  # None: the line was whole and only lacked its newline

    def describe(self) -> str:
        if self.moved_to is None:
            return f"line {self.line} of {self.path} was complete; added its missing newline"
        return (
            f"moved the torn line {self.line} ({self.fragment_bytes} bytes) of {self.path} "
            f"to {self.moved_to}"
        )


def repair_log(path: Path, *, dry_run: bool = False) -> RepairResult | None:
    """Fix a torn tail: finish a whole line missing its newline, else set the fragment
    aside in `<log>.torn-<time>` and cut it off. None when there is nothing to repair."""
    _require_log(path)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        content = _read_all(fd)
        records = parse_log(content)
        if not records or records[-1].complete:
            return None
        last = records[-1]
        expected_prev = records[-2].sha256 if len(records) > 1 else ZERO_SHA256
        whole = last.data is not None and last.data.get("prev_sha256") == expected_prev
        moved_to = None if whole else path.with_name(f"{path.name}.torn-{utcnow():%Y%m%dT%H%M%SZ}")
        result = RepairResult(path, last.number, len(last.raw), moved_to)
        if dry_run:
            return result
        if moved_to is None:
            os.write(fd, b"\n")
        else:
            _write_new_file(moved_to, last.raw)
            os.ftruncate(fd, len(content) - len(last.raw))
        os.fsync(fd)
        return result
    finally:
        os.close(fd)


def _write_new_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- reading it back


@dataclass(frozen=True)
class DrillSummary:
    """A drill entry with who signed it, as recorded (see verify_log for what holds)."""

    line: int
    sha256: str
    entry: dict[str, Any]
    signed_by: str | None  # own signature, or the signer of a later `sign` line
    countersigned_by: tuple[str, ...]

    def get(self, name: str) -> Any:
        return self.entry.get(name)

    @property
    def rto_seconds(self) -> float | None:
        return _seconds(self.entry.get("rto_seconds"))

    @property
    def rpo_seconds(self) -> float | None:
        return _seconds(self.entry.get("rpo_seconds"))


def summarize(records: list[LogRecord]) -> list[DrillSummary]:
    result = []
    for record in records:
        if record.type != DRILL or record.data is None:
            continue
        signed_by = record.data.get("signer") if record.data.get("signature") else None
        if signed_by is None:
            late = _signature_lines(records, record, SIGN)
            signed_by = late[0].get("signer") if late else None
        counter = tuple(
            str(r.get("signer")) for r in _signature_lines(records, record, COUNTERSIGN)
        )
        result.append(DrillSummary(record.number, record.sha256, record.data, signed_by, counter))
    return result


def format_duration(seconds: float | None) -> str:
    """`1 h 12 m`, `42 m`, `35 s`; whole units, rounded down (never flatters an RTO)."""
    if seconds is None:
        return "n/a"
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} m"
    if minutes:
        return f"{minutes} m"
    return f"{secs} s"


def entry_day(entry: Mapping[str, Any]) -> str:
    """The entry's `date` as YYYY-MM-DD (UTC), or the text as written if it is not a time."""
    text = str(entry.get("date") or "")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    return (parsed.astimezone(UTC) if parsed.tzinfo else parsed).strftime("%Y-%m-%d")


def export_markdown(records: list[LogRecord]) -> str:
    """The seed runbook's DR Drill Log table, one row per drill, ready to paste."""
    rows = [MARKDOWN_HEADER, MARKDOWN_SEPARATOR]
    for drill in summarize(records):
        cells = (
            _cell(entry_day(drill.entry)),
            _cell(drill.get("performed_by")),
            _cell(drill.get("backup")),
            format_duration(drill.rto_seconds),
            format_duration(drill.rpo_seconds),
            _cell(drill.get("result")),
        )
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _cell(value: Any) -> str:
    # The log's fields are untrusted text: one line, no `|` breaking the table, and no
    # control characters (an escape sequence would repaint the terminal showing it).
    text = "" if value is None else str(value)
    return escape_control(" ".join(text.split()).replace("|", "\\|"))


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# ---------------------------------------------------------------- verification


@dataclass(frozen=True)
class Problem:
    line: int
    kind: str  # torn, corrupt, malformed, chain, tampered, untrusted, unsigned, orphan,
    # missing (a journal's entry is not in the log), head (not the expected last line)
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class DrillVerdict:
    """What verification established about one drill entry."""

    line: int
    sha256: str
    entry: dict[str, Any]
    signed_by: str | None = None  # a valid signature by this principal (own or `sign` line)
    signed_on_line: int | None = None
    countersigned_by: list[tuple[str, int]] = field(default_factory=list)  # (principal, line)
    # Without a trust root: signatures that match the content, by the principal the line
    # names; nobody checked that the key is that person's.
    claimed_by: str | None = None
    claimed_on_line: int | None = None
    claimed_countersigners: list[tuple[str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class SignerSeen:
    """A key that signed lines of the log, as the lines name it (`signer`)."""

    principal: str
    fingerprint: str  # SHA256:... of the signing key, as `ssh-keygen -l` prints it
    lines: tuple[int, ...]
    trusted: bool | None  # None: no trust root, not checked


@dataclass(frozen=True)
class JournalEntry:
    """A drill entry a run journal says it appended to a drill log."""

    run_id: str
    journal: Path
    sha256: str
    line: int | None  # None: written before journals recorded it
    log: Path | None  # None: written before journals recorded it (then: the default log)


@dataclass(frozen=True)
class VerifyReport:
    path: Path
    trust: TrustRoot | None  # None: signatures not checked against anyone
    lines: int
    drills: tuple[DrillVerdict, ...]
    problems: tuple[Problem, ...]
    head: str | None = None  # sha256 of the last complete line; None for an empty log
    signers: tuple[SignerSeen, ...] = ()
    journal_entries: tuple[JournalEntry, ...] = ()  # those naming this log, all checked

    @property
    def allowed_signers(self) -> Path | None:
        return self.trust.path if self.trust else None

    @property
    def signatures_checked(self) -> bool:
        return self.trust is not None

    @property
    def chain_ok(self) -> bool:
        """Nothing found wrong; with no trust root this says nothing about who signed."""
        return not self.problems

    @property
    def ok(self) -> bool:
        """Valid: the chain and journals agree and every signature is trusted."""
        return self.chain_ok and self.signatures_checked

    @property
    def first_problem(self) -> Problem | None:
        return self.problems[0] if self.problems else None


def journal_entries(state_dir: Path, log: Path, default_log: Path) -> list[JournalEntry]:
    """The drill entries that run journals under `state_dir` recorded in `log`.

    A journal that names no log (written before journals did) counts for `default_log`.
    """
    target = log.resolve()
    found = []
    # read as plain JSON, not through RunJournal: a journal too damaged or too new to resume
    # still names the entry its run appended
    for folder in JOURNAL_FOLDERS:
        for path in sorted((state_dir / folder).glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # not a journal (or unreadable): `restore --list-runs` reports it
            if not isinstance(data, dict):
                continue
            sha = data.get("drill_log_entry")
            if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
                continue
            named = data.get("drill_log_path")
            written_to = Path(named) if isinstance(named, str) and named else None
            if (written_to or default_log).resolve() != target:
                continue
            line = data.get("drill_log_line")
            run_id = data.get("run_id")
            found.append(
                JournalEntry(
                    run_id if isinstance(run_id, str) else path.stem,
                    path,
                    sha,
                    line if isinstance(line, int) and not isinstance(line, bool) else None,
                    written_to,
                )
            )
    return found


def lost_entries(records: list[LogRecord], recorded: list[JournalEntry]) -> list[JournalEntry]:
    """The journal-recorded entries that are no (complete) line of the log."""
    present = {r.sha256 for r in records if r.complete}
    return [entry for entry in recorded if entry.sha256 not in present]


def missing_entries(records: list[LogRecord], recorded: list[JournalEntry]) -> list[Problem]:
    """A problem for every journal-recorded entry that is no (complete) line of the log."""
    problems = []
    for entry in lost_entries(records, recorded):
        where = f"line {entry.line}" if entry.line else "a line"
        problems.append(
            Problem(
                entry.line or len(records) + 1,
                "missing",
                f"run {entry.run_id} appended its drill entry {entry.sha256[:12]} as {where} "
                f"(journal {entry.journal}), and it is not in the log: the log was cut or "
                "replaced; restore it from a copy",
            )
        )
    return problems


def log_head(records: list[LogRecord]) -> str | None:
    """The sha256 of the last complete line (what `--expect-head` is compared with)."""
    complete = [r for r in records if r.complete]
    return complete[-1].sha256 if complete else None


def _head_problem(records: list[LogRecord], expected: str) -> Problem | None:
    complete = [r for r in records if r.complete]
    if complete and complete[-1].sha256.startswith(expected):
        return None
    at = next((r for r in complete if r.sha256.startswith(expected)), None)
    if at is not None:
        following = len(complete) - at.number
        return Problem(
            at.number + 1,
            "head",
            f"the expected head {expected[:12]} is line {at.number}, but {following} more "
            f"line(s) follow it (head now {complete[-1].sha256[:12]}): if these were "
            "appended since you noted the head, check them and note the new head",
        )
    if not complete:
        return Problem(
            1, "head", f"the log is empty, but its head was expected to be {expected[:12]}"
        )
    return Problem(
        len(complete),
        "head",
        f"the expected head {expected[:12]} is not in the log at all (its {len(complete)} "
        f"line(s) end with {complete[-1].sha256[:12]}): the log was cut or replaced",
    )


def verify_log(
    path: Path,
    trust: TrustRoot | Path | None,
    *,
    recorded: list[JournalEntry] | None = None,
    expect_head: str | None = None,
) -> VerifyReport:
    """Check the chain, every signature, that every `recorded` entry is present and (when
    given) that the last line is `expect_head`; list every problem, the first one first.

    `trust` None checks no signer: signatures are only matched against their line's
    content, and the report is never `ok`. A Path is checked as `trust_root` does.
    """
    if isinstance(trust, Path):
        trust = trust_root(trust, "the caller")
    if expect_head is not None:
        expect_head = expect_head.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{12,64}", expect_head):
            raise UsageError(
                f"--expect-head {expect_head!r} is not a sha256 (12 to 64 hex digits, as "
                "`preskool-dr drill-log verify` prints the head)"
            )
    records = read_log(path)
    problems: list[Problem] = []
    drills: dict[str, DrillVerdict] = {}
    seen: dict[tuple[str, str], list[int]] = {}
    checked: dict[tuple[str, str], bool] = {}
    expected_prev = ZERO_SHA256

    def check_signature(record: LogRecord) -> bool:
        """Content matches (and, with a trust root, the signer is trusted)."""
        assert record.data is not None
        check = _check_signature(record, trust)
        signer = str(record.data["signer"])
        if check.fingerprint:
            seen.setdefault((signer, check.fingerprint), []).append(record.number)
            checked[(signer, check.fingerprint)] = check.ok
        if not check.ok:
            problems.append(Problem(record.number, check.kind, check.reason))
        return check.ok

    for record in records:
        prev, expected_prev = expected_prev, record.sha256
        problem = _check_shape(record)
        if problem:
            problems.append(problem)
            continue
        assert record.data is not None
        data = record.data
        if data["prev_sha256"] != prev:
            problems.append(_chain_problem(record))
        if record.type == DRILL:
            verdict = DrillVerdict(record.number, record.sha256, data)
            drills[record.sha256] = verdict
            if data["signature"] is None or not check_signature(record):
                continue
            if trust is None:
                verdict.claimed_by, verdict.claimed_on_line = data["signer"], record.number
            else:
                verdict.signed_by, verdict.signed_on_line = data["signer"], record.number
            continue
        target = drills.get(str(data["entry_sha256"]))
        if target is None:
            problems.append(
                Problem(
                    record.number,
                    "orphan",
                    f"this {record.type} line names entry {str(data['entry_sha256'])[:12]}, "
                    "which is no earlier drill entry here (that entry was changed or removed)",
                )
            )
            continue
        if not check_signature(record):
            continue
        if trust is None:
            if record.type == SIGN and target.claimed_by is None:
                target.claimed_by, target.claimed_on_line = data["signer"], record.number
            elif record.type == COUNTERSIGN:
                target.claimed_countersigners.append((data["signer"], record.number))
        elif record.type == SIGN and target.signed_by is None:
            target.signed_by, target.signed_on_line = data["signer"], record.number
        elif record.type == COUNTERSIGN:
            target.countersigned_by.append((data["signer"], record.number))
    for verdict in drills.values():
        signed = verdict.signed_by or verdict.claimed_by
        if signed is None and verdict.entry["signature"] is None:
            problems.append(
                Problem(
                    verdict.line,
                    "unsigned",
                    f"entry is UNSIGNED ({verdict.entry['signer']} never signed it): sign it "
                    f"with `preskool-dr drill-log sign {verdict.line} --drill-log {path}`",
                )
            )
    problems += missing_entries(records, recorded or [])
    if expect_head is not None:
        head_problem = _head_problem(records, expect_head)
        if head_problem is not None:
            problems.append(head_problem)
    problems.sort(key=lambda p: p.line)
    signers = tuple(
        SignerSeen(*key, tuple(numbers), checked[key] if trust else None)
        for key, numbers in seen.items()
    )
    return VerifyReport(
        path,
        trust,
        len(records),
        tuple(drills.values()),
        tuple(problems),
        log_head(records),
        signers,
        tuple(recorded or ()),
    )


def _check_shape(record: LogRecord) -> Problem | None:
    if not record.complete:
        return Problem(
            record.number,
            "torn",
            f"the last line is torn ({len(record.raw)} bytes without a newline: an append was "
            "interrupted); `preskool-dr drill-log repair` sets it aside",
        )
    if record.data is None:
        return Problem(record.number, "corrupt", f"line is {record.error}: the file was damaged")
    kind = record.type
    if kind not in _REQUIRED:
        return Problem(record.number, "malformed", f"unknown line type {kind!r}")
    missing = [name for name in _REQUIRED[kind] if name not in record.data]
    if missing:
        return Problem(record.number, "malformed", f"{kind} line lacks {', '.join(missing)}")
    signer, signature = record.data["signer"], record.data["signature"]
    if not isinstance(signer, str) or not signer:
        return Problem(record.number, "malformed", "signer must be a principal name")
    if not (isinstance(signature, str) or (signature is None and kind == DRILL)):
        return Problem(record.number, "malformed", f"{kind} line has no usable signature")
    return None


def _chain_problem(record: LogRecord) -> Problem:
    if record.number == 1:
        message = "prev_sha256 of the first line is not 64 zeros: lines before it were removed"
    else:
        message = (
            f"prev_sha256 does not match line {record.number - 1}: a line was removed, "
            f"inserted or reordered here (or line {record.number - 1} was altered)"
        )
    return Problem(record.number, "chain", message)


def _check_signature(record: LogRecord, trust: TrustRoot | None) -> SignatureCheck:
    assert record.data is not None
    data = canonical_bytes(record.data)
    signature = str(record.data["signature"])
    if trust is None:
        return check_content(data, signature)
    return verify(data, signature, signer=str(record.data["signer"]), allowed_signers=trust.path)
