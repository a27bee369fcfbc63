"""The parser of `preskool-dr drill-log` (its options and help): imported to build the
command line; the command itself (cli/drill_log_cmd.py) is imported only when it runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from preskool_dr.cli.args.lazy import lazy
from preskool_dr.core.drill.names import ALLOWED_SIGNERS_EXAMPLE, NAMESPACE

DESCRIPTION = f"""\
The DR drill log: one signed line per quarterly drill, each chained to the one before,
so a changed, removed or reordered line is detected. A drill
(`preskool-dr restore BACKUP --drill ...`) appends to it; these actions read it back.

  show         list the drills: date, who, backup, RTO, RPO, result, who signed
  verify       check the chain, every SSH signature and that no drill a run journal
               recorded is missing (exit 0 valid, 1 invalid, 2 no trust root given)
  export       the runbook's "DR Drill Log" Markdown table, ready to paste
  sign         sign a drill recorded without a signature (no key at the time)
  countersign  the ops lead's sign-off on a drill
  repair       set aside a torn last line left by a crash during a write

Signatures are plain OpenSSH (`ssh-keygen -Y`, namespace {NAMESPACE}). The key is
--sign-key PATH, else drill.sign_key in runbook.yaml, else the first ssh-agent key.
verify checks signatures against an allowed_signers file named explicitly (the trust
root): --allowed-signers FILE, else drill.allowed_signers in runbook.yaml; one line per
person allowed to sign, their principal name then their public key:
  {ALLOWED_SIGNERS_EXAMPLE}
A file writable by group/others or owned by another user is refused. Without a trust
root verify still checks the chain, but says the signatures were not checked (exit 2).
--expect-head SHA (the head verify printed last time, kept elsewhere) also catches a
log cut back to an earlier line.
"""


EPILOG = """\
examples:
  preskool-dr drill-log show
  preskool-dr drill-log verify --allowed-signers /etc/preskool-dr/allowed_signers
  preskool-dr drill-log verify --expect-head 3f5a9c0e12b4...
  preskool-dr drill-log export --format markdown
  preskool-dr drill-log sign 3 --sign-key ~/.ssh/id_ed25519
  preskool-dr drill-log countersign 3 --signer ops-lead --sign-key ~/.ssh/id_ed25519
  preskool-dr drill-log repair --yes

ENTRY is the line number or the first 6+ hex digits of the sha256 that `show` prints.
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "drill-log",
        help="show, verify, export and sign the DR drill log",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--drill-log",
        type=Path,
        metavar="PATH",
        help="the drill log file (default: drill.log in runbook.yaml, else "
        "<state dir>/drill-log.jsonl)",
    )
    key_options = argparse.ArgumentParser(add_help=False)
    key_options.add_argument(
        "--sign-key",
        type=Path,
        metavar="PATH",
        help="private key file to sign with (default: drill.sign_key, else the ssh-agent); "
        "asks for its passphrase when run on a terminal",
    )
    actions = parser.add_subparsers(dest="drill_log_action", metavar="ACTION", required=True)

    def action(name: str, help_text: str, *parents: argparse.ArgumentParser) -> Any:
        return actions.add_parser(
            name,
            parents=[common, *parents],
            help=help_text,
            description=help_text,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    show = action("show", "list the drills and who signed and countersigned them")
    show.add_argument("--json", action="store_true", help="machine-readable output")

    verify = action("verify", "check the hash chain and every signature (exit 0 valid, 1 not)")
    verify.add_argument(
        "--allowed-signers",
        type=Path,
        metavar="FILE",
        help=f"who may sign: lines like `{ALLOWED_SIGNERS_EXAMPLE}` "
        "(default: drill.allowed_signers in runbook.yaml; none: signatures not checked)",
    )
    verify.add_argument(
        "--expect-head",
        metavar="SHA",
        help="fail unless the log's last line has this sha256 (12+ hex digits)",
    )
    verify.add_argument("--json", action="store_true", help="machine-readable output")

    export = action("export", "print the runbook's DR Drill Log table")
    export.add_argument(
        "--format", choices=["markdown"], default="markdown", help="output format (markdown)"
    )

    sign = action("sign", "sign a drill entry recorded without a signature", key_options)
    sign.add_argument("entry", metavar="ENTRY", help="line number or sha256 prefix")
    sign.add_argument(
        "--signer",
        metavar="NAME",
        help="principal to sign as (default: the signer the entry names)",
    )

    countersign = action("countersign", "add the ops lead's sign-off to a drill", key_options)
    countersign.add_argument("entry", metavar="ENTRY", help="line number or sha256 prefix")
    countersign.add_argument(
        "--signer",
        metavar="NAME",
        required=True,
        help="your principal name, as in allowed_signers",
    )

    repair = action("repair", "set aside a torn last line (kept in <log>.torn-<time>)")
    repair.add_argument("--yes", action="store_true", help="do it (without: only say what)")

    parser.set_defaults(handler=lazy("drill_log_cmd", "run"))
