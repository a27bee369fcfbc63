"""Verifying the drill log: the hash chain, every signature against the trust root
(allowed signers), the entries run journals recorded, and `--expect-head`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from preskool_dr.core.base.errors import UsageError
from preskool_dr.core.drill.entry import (
    COUNTERSIGN,
    DRILL,
    REQUIRED_FIELDS,
    SIGN,
    ZERO_SHA256,
    LogRecord,
    canonical_bytes,
    log_head,
    read_log,
)
from preskool_dr.core.drill.recorded import JournalEntry, lost_entries
from preskool_dr.core.drill.signing import (
    SignatureCheck,
    TrustRoot,
    check_content,
    trust_root,
    verify,
)


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
    if kind not in REQUIRED_FIELDS:
        return Problem(record.number, "malformed", f"unknown line type {kind!r}")
    missing = [name for name in REQUIRED_FIELDS[kind] if name not in record.data]
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
