"""Appending to the drill log: a drill entry, a late signature, a countersignature.

Appends hold an flock on the log file itself, read the last line under it, and write the
new line with one write() on an O_APPEND descriptor, then fsync. A crash can still leave
a torn last line; appends then refuse (chaining onto garbage would bless it) and
`repair.repair_log` sets the fragment aside.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from preskool_dr import __version__
from preskool_dr.core.base.errors import DrError, UsageError
from preskool_dr.core.base.events import utcnow
from preskool_dr.core.base.files import fsync_dir
from preskool_dr.core.base.paths import ensure_private_dir, state_modes
from preskool_dr.core.base.safe_text import escape_control
from preskool_dr.core.drill.entry import (
    ADDED_FIELDS,
    COUNTERSIGN,
    DRILL,
    DRILL_FIELDS,
    LOG_VERSION,
    SIGN,
    ZERO_SHA256,
    LogRecord,
    canonical_bytes,
    find_entry,
    iso,
    jsonable,
    parse_log,
    require_log,
    sha256_hex,
    signature_lines,
)
from preskool_dr.core.drill.signing import SigningError, SigningKey, sign

NO_KEY_HINT = (
    "no signing key: pass --sign-key PATH, set drill.sign_key in runbook.yaml, "
    "or load a key into ssh-agent"
)


class TornLogError(DrError):
    """The log ends in an incomplete or unreadable line; nothing was appended."""


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
    taken = [k for k in ADDED_FIELDS if k in fields]
    missing = [k for k in DRILL_FIELDS if k not in fields]
    if taken or missing:
        raise ValueError(f"drill entry fields: missing {missing}, reserved {taken}")
    body = jsonable(fields)
    entry: dict[str, Any] = {"type": DRILL, "version": LOG_VERSION, "date": iso(utcnow())}
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
        late = signature_lines(records, target, SIGN)
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
        for record in signature_lines(records, target, COUNTERSIGN):
            if record.get("signer") == signer:
                raise UsageError(
                    f"line {target.number} is already countersigned by {signer} "
                    f"on line {record.number}"
                )
        return _signature_line(COUNTERSIGN, target, signer)

    return _append_signature(path, build, key, interactive)


def _signature_line(kind: str, target: LogRecord, signer: str) -> dict[str, Any]:
    if not signer.strip():
        raise UsageError("name the signer with --signer NAME (their allowed_signers principal)")
    return {
        "type": kind,
        "version": LOG_VERSION,
        "date": iso(utcnow()),
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
    require_log(path)
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
    # 0640 in a state folder shared with its group: `check` run as the monitoring user reads it
    mode = state_modes(path.parent)[1]
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        if created:
            os.fchmod(fd, mode)  # O_CREAT's mode went through the umask
        # Held while signing too: the signature covers prev_sha256, which another append
        # would change. Drills are rare, so a second appender waiting is fine.
        fcntl.flock(fd, fcntl.LOCK_EX)
        if created:
            fsync_dir(path.parent)
        records = parse_log(read_all(fd))
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


def read_all(fd: int) -> bytes:
    """The whole file behind `fd` (held under its flock), from the start."""
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
