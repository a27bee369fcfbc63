"""Drill-log signing with real ssh-keygen keys, checked with stock OpenSSH too."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from preskool_dr.core.drill.entry import canonical_bytes

# the fields of one drill entry (tests append them with their own signer and key)
DRILL_FIELDS: dict[str, Any] = {
    "performed_by": "alice",
    "backup": "preskool-backup-20260220_020000.sql.gz",
    "backup_md5": "0123456789abcdef0123456789abcdef",
    "incident_declared_at": "2026-02-20T09:00:00Z",
    "app_accessible_at": "2026-02-20T10:12:30Z",
    "rto_seconds": 4350,
    "rpo_seconds": 25200,
    "result": "pass",
    "steps": [{"id": "restore", "status": "done"}],
}


def make_signing_key(folder: Path, principal: str) -> tuple[Path, Path]:
    """A fresh ed25519 key (no passphrase) and an allowed_signers file naming `principal`."""
    key = folder / f"{principal}_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", principal, "-f", str(key)],
        check=True,
    )
    kind, blob = (folder / f"{principal}_ed25519.pub").read_text().split()[:2]
    allowed = folder / "allowed_signers"
    allowed.write_text(f'{principal} namespaces="preskool-dr-drill" {kind} {blob}\n')
    return key, allowed


def assert_openssh_verifies(entry: dict, allowed: Path, principal: str, folder: Path) -> None:
    """The entry's signature checks with stock `ssh-keygen -Y verify`, not only our code."""
    unsigned = {k: v for k, v in entry.items() if k != "signature"}
    signature = folder / "entry.sig"
    signature.write_text(entry["signature"])
    check = subprocess.run(
        [
            "ssh-keygen",
            "-Y",
            "verify",
            "-f",
            str(allowed),
            "-I",
            principal,
            "-n",
            "preskool-dr-drill",
            "-s",
            str(signature),
        ],
        input=canonical_bytes(unsigned),
        capture_output=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
