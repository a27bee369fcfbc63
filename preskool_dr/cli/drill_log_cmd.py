"""`preskool-dr drill-log ...`: read, verify, export and sign the DR drill log."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from preskool_dr.cli.main import Context
from preskool_dr.cli.notifying import notifier
from preskool_dr.cli.output import print_json
from preskool_dr.core.base.notify import Notification
from preskool_dr.core.base.safe_text import escape_control
from preskool_dr.core.drill.append import countersign_entry, sign_entry
from preskool_dr.core.drill.entry import read_log
from preskool_dr.core.drill.export import (
    DrillSummary,
    entry_day,
    export_markdown,
    format_duration,
    summarize,
)
from preskool_dr.core.drill.names import ALLOWED_SIGNERS_EXAMPLE
from preskool_dr.core.drill.recorded import journal_entries
from preskool_dr.core.drill.repair import repair_log
from preskool_dr.core.drill.signing import TrustRoot, resolve_key, trust_root
from preskool_dr.core.drill.verify import (
    DrillVerdict,
    VerifyReport,
    verify_log,
)


def run(args: argparse.Namespace, ctx: Context) -> int:
    path: Path = args.drill_log or ctx.config.drill_log_path
    handler = {
        "show": _show,
        "verify": _verify,
        "export": _export,
        "sign": _sign,
        "countersign": _sign,
        "repair": _repair,
    }[args.drill_log_action]
    return handler(args, ctx, path)


def _show(args: argparse.Namespace, ctx: Context, path: Path) -> int:
    records = read_log(path)
    drills = summarize(records)
    if args.json:
        print_json([_summary_json(d) for d in drills])
        return 0
    say(f"Drill log {path}: {len(drills)} drills in {len(records)} lines")
    for drill in drills:
        say(
            f"#{drill.line}  {drill.sha256[:12]}  {entry_day(drill.entry)}  "
            f"by {drill.get('performed_by')}  result: {drill.get('result')}"
        )
        say(f"    backup {drill.get('backup')}")
        say(
            f"    RTO {format_duration(drill.rto_seconds)}   "
            f"RPO {format_duration(drill.rpo_seconds)}"
        )
        say(f"    {_signatures(drill.signed_by, drill.countersigned_by)}")
    if records and not records[-1].complete:
        say(
            f"WARNING: line {records[-1].number} is torn (an interrupted write): "
            f"run `preskool-dr drill-log repair --drill-log {path}`"
        )
    if drills:
        say("Signatures are not checked here: run `preskool-dr drill-log verify`.")
    return 0


def say(text: str) -> None:
    """One line of output holding the log's (untrusted) text, control characters escaped."""
    print(escape_control(text))


def _signatures(signed_by: str | None, countersigned_by: tuple[str, ...] | list[str]) -> str:
    text = f"signed by {signed_by}" if signed_by else "UNSIGNED"
    if countersigned_by:
        text += f"; countersigned by {', '.join(countersigned_by)}"
    return text


def _summary_json(drill: DrillSummary) -> dict[str, Any]:
    return {
        "line": drill.line,
        "sha256": drill.sha256,
        "signed_by": drill.signed_by,
        "countersigned_by": list(drill.countersigned_by),
        "entry": drill.entry,
    }


def _verify(args: argparse.Namespace, ctx: Context, path: Path) -> int:
    trust = _trust_root(args, ctx)
    recorded = journal_entries(ctx.config.state_dir, path, ctx.config.drill_log_path)
    report = verify_log(path, trust, recorded=recorded, expect_head=args.expect_head)
    if args.json:
        print_json(_report_json(report))
        return _verify_exit(report, ctx)
    say(
        f"Drill log {path}: {report.lines} lines, {len(report.drills)} drills; "
        f"head {report.head or 'none (empty)'}"
    )
    if trust is not None:
        say(f"Allowed signers: {trust.describe()}")
    else:
        say("Signatures not checked: no trust root (see below)")
    say(
        f"Run journals in {ctx.config.state_dir} recorded {len(recorded)} entries "
        "in this log; each is checked to be here"
    )
    for verdict in report.drills:
        say(
            f"  #{verdict.line}  {entry_day(verdict.entry)}  {verdict.sha256[:12]}  "
            f"{_verdict_text(verdict)}"
        )
    if report.signers:
        say("Signing keys seen (principal as the lines name it, key fingerprint):")
        for signer in report.signers:
            trusted = {True: "trusted", False: "NOT trusted", None: "not checked"}[signer.trusted]
            numbers = ", ".join(str(n) for n in signer.lines)
            say(f"  {signer.principal}  {signer.fingerprint}  {trusted}  (lines {numbers})")
    if report.problems:
        if len(report.problems) > 1:
            say(f"Problems ({len(report.problems)}):")
            for problem in report.problems:
                say(f"  line {problem.line} [{problem.kind}] {problem.message}")
        first = report.first_problem
        assert first is not None
        say(f"INVALID: first bad line {first.line} ({first.kind}): {first.message}")
        return 1
    if report.ok:
        say("VALID: chain intact, every drill validly signed")
        return 0
    say("CHAIN INTACT; signatures NOT CHECKED: no trust root")
    return _verify_exit(report, ctx)


def _trust_root(args: argparse.Namespace, ctx: Context) -> TrustRoot | None:
    """--allowed-signers, else the runbook's drill.allowed_signers, else none: never a file
    found next to the log, which whoever can rewrite the log could rewrite too."""
    if args.allowed_signers is not None:
        return trust_root(args.allowed_signers, "--allowed-signers")
    configured = ctx.config.drill.allowed_signers
    if configured is not None:
        return trust_root(configured, f"drill.allowed_signers in {ctx.config.source}")
    return None


def _verify_exit(report: VerifyReport, ctx: Context) -> int:
    """0 valid, 1 invalid; 2 (with how to name a trust root) when signers went unchecked."""
    if report.problems:
        return 1
    if report.ok:
        return 0
    hint = (
        "preskool-dr: error: signatures not checked: no trust root. Name the allowed_signers "
        "file, one line per signer, e.g. "
        f"`{ALLOWED_SIGNERS_EXAMPLE}` (their public key from ~/.ssh/*.pub): pass "
        "--allowed-signers FILE or set drill.allowed_signers in runbook.yaml; keep it "
        "writable only by you or root."
    )
    old_default = ctx.config.state_dir / "allowed_signers"
    if old_default.exists():
        hint += (
            f" {old_default} is no longer used on its own: it sits next to the log it vouches "
            "for; name it if you trust it."
        )
    print(hint, file=sys.stderr)
    return 2


def _verdict_text(verdict: DrillVerdict) -> str:
    if verdict.signed_by and verdict.signed_on_line != verdict.line:
        signed = f"signed by {verdict.signed_by} (line {verdict.signed_on_line})"
    elif verdict.signed_by:
        signed = f"signed by {verdict.signed_by}"
    elif verdict.claimed_by and verdict.claimed_on_line != verdict.line:
        signed = (
            f"signature NOT CHECKED, names {verdict.claimed_by} (line {verdict.claimed_on_line})"
        )
    elif verdict.claimed_by:
        signed = f"signature NOT CHECKED, names {verdict.claimed_by}"
    elif verdict.entry.get("signature") is None:
        signed = "UNSIGNED"
    else:
        signed = "signature NOT valid"
    if verdict.countersigned_by:
        names = ", ".join(f"{name} (line {line})" for name, line in verdict.countersigned_by)
        signed += f"; countersigned by {names}"
    if verdict.claimed_countersigners:
        names = ", ".join(f"{n} (line {ln})" for n, ln in verdict.claimed_countersigners)
        signed += f"; countersignatures NOT CHECKED, name {names}"
    return signed


def _report_json(report: VerifyReport) -> dict[str, Any]:
    first = report.first_problem
    return {
        "valid": report.ok,
        "chain_ok": report.chain_ok,
        "signatures_checked": report.signatures_checked,
        "path": str(report.path),
        "allowed_signers": None if report.trust is None else str(report.trust.path),
        "trust_root_source": None if report.trust is None else report.trust.source,
        "lines": report.lines,
        "head_sha256": report.head,
        "signers": [dataclasses.asdict(s) for s in report.signers],
        "journal_entries": [
            {"run_id": e.run_id, "sha256": e.sha256, "line": e.line} for e in report.journal_entries
        ],
        "drills": [
            {
                "line": v.line,
                "sha256": v.sha256,
                "date": v.entry.get("date"),
                "performed_by": v.entry.get("performed_by"),
                "result": v.entry.get("result"),
                "signed_by": v.signed_by,
                "signed_on_line": v.signed_on_line,
                "unchecked_signer": v.claimed_by,
                "countersigned_by": [{"signer": n, "line": ln} for n, ln in v.countersigned_by],
            }
            for v in report.drills
        ],
        "problems": [dataclasses.asdict(p) for p in report.problems],
        "first_problem": None if first is None else str(first),
    }


def _export(args: argparse.Namespace, ctx: Context, path: Path) -> int:
    sys.stdout.write(export_markdown(read_log(path)))
    return 0


def _sign(args: argparse.Namespace, ctx: Context, path: Path) -> int:
    key = resolve_key(args.sign_key, ctx.config.drill.sign_key)
    # On a terminal ssh-keygen may ask for a passphrase; piped or from cron it never waits.
    interactive = sys.stdin.isatty()
    if args.drill_log_action == "sign":
        result = sign_entry(path, args.entry, key=key, signer=args.signer, interactive=interactive)
    else:
        result = countersign_entry(
            path, args.entry, signer=args.signer, key=key, interactive=interactive
        )
    print(result.message)
    entry = result.entry
    verb = "signed" if args.drill_log_action == "sign" else "countersigned"
    notifier(ctx.config).send(
        Notification(
            "drill_signed",
            f"drill-log line {entry['entry_line']} {verb} by {entry['signer']}",
            result.message,
            details={"drill_log": str(path), "entry_sha256": entry["entry_sha256"]},
        )
    )
    return 0


def _repair(args: argparse.Namespace, ctx: Context, path: Path) -> int:
    result = repair_log(path, dry_run=not args.yes)
    if result is None:
        print(f"{path}: nothing to repair, the last line is complete")
        return 0
    if args.yes:
        print(result.describe())
        return 0
    plan = (
        "add its missing newline (the line is whole)"
        if result.moved_to is None
        else f"move it to {result.moved_to} and cut it off the log"
    )
    print(
        f"{path} ends with a torn line {result.line} ({result.fragment_bytes} bytes); "
        f"repair would {plan}. Run again with --yes to do it."
    )
    return 1
