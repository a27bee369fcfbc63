"""`preskool-dr verify BACKUP`: md5 sidecar + full gzip check in one read (download first
when the backup is only in S3)."""

from __future__ import annotations

import argparse
from typing import Any

import humanize

from preskool_dr.cli.output import print_json, progress_sink, tagged
from preskool_dr.core.base import age
from preskool_dr.core.base.errors import ArchivedError
from preskool_dr.core.storage.catalog import BackupRecord, resolve_backup
from preskool_dr.core.storage.checksum import VerifyResult, verify_backup
from preskool_dr.core.storage.fetch import discard_download, fetch_backup, request_restore


def _file_json(result: VerifyResult) -> dict[str, Any]:
    return {
        "path": str(result.path),
        "size": result.size,
        "ok": result.ok,
        "expected_md5": result.expected_md5,
        "actual_md5": result.actual_md5,
        "md5_ok": result.md5_ok,
        "sidecar_error": result.sidecar_error,
        "gzip_checked": result.gzip_checked,
        "gzip_ok": result.gzip_ok,
        "gzip_error": result.gzip_error,
        "dump_checked": result.dump_checked,
        "dump_ok": result.dump_ok,
        "dump_error": result.dump_error,
        "encrypted": result.encrypted,
    }


def _restore_status(record: BackupRecord) -> str:
    return "restore-in-progress" if record.restore_state == "in-progress" else "restore-requested"


def run(args: argparse.Namespace, ctx: Any) -> int:
    config = ctx.config
    record = resolve_backup(config, args.backup)
    base = {"backup": record.name, "s3_url": record.s3_url, "kind": record.kind}
    if args.request_restore and record.needs_restore:
        message = request_restore(record)
        if args.json:
            print_json({**base, "ok": False, "status": _restore_status(record), "message": message})
        else:
            tagged("RESTORE", message)
        return 3
    # a bad identity file is said before any download
    identities = age.identities_for(record.name, config.encryption.identity)
    on_event = progress_sink()
    try:
        path = fetch_backup(config, record, on_event=on_event)
    except ArchivedError as exc:
        if not args.json:
            raise
        print_json({**base, "ok": False, "status": "archived", "message": str(exc)})
        return exc.exit_code
    if args.request_restore and not args.json:
        tagged("RESTORE", f"{record.name} needs no restore: verifying it")
    if not args.json:
        where = f"downloaded from {record.s3_url}" if record.local_path is None else "local"
        size = humanize.naturalsize(record.size, binary=True) if record.size is not None else "?"
        tagged("VERIFY", f"{path} ({size}, {where})")
    results = verify_backup(path, on_event=on_event, identities=identities)
    ok = all(result.ok for result in results)
    discarded = not ok and record.local_path is None
    if discarded:  # a bad download kept under its final name would be reused by the next run
        discard_download(path)
    if args.json:
        files = [_file_json(r) for r in results]
        status = "ok" if ok else "bad"
        report = {**base, "ok": ok, "status": status, "path": str(path), "files": files}
        print_json({**report, "download_removed": discarded})
        return 0 if ok else 1
    for result in results:
        label = f"{result.path.name}: " if len(results) > 1 else ""
        tagged("OK" if result.md5_ok else "FAIL", label + result.md5_text())
        unchecked = result.encrypted and not result.gzip_checked
        tagged(
            "NOTE" if unchecked else "OK" if result.gzip_ok else "FAIL",
            label + result.gzip_text(),
        )
        if result.dump_checked and result.gzip_ok:
            tagged("OK" if result.dump_ok else "FAIL", label + result.dump_text())
    if ok:
        tagged("OK", f"Backup verified: {path}")
        return 0
    if discarded:
        tagged("WARN", f"Removed the downloaded copy {path}: the next verify downloads it afresh")
    tagged("FAIL", f"Backup is NOT usable: {path} (pick another with `preskool-dr list`)")
    return 1
