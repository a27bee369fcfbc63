"""Glacier/Deep Archive objects: the operator line for one not restored yet, and the
restore request (`verify --request-restore`, `g` in the TUI's backup list)."""

from __future__ import annotations

import botocore.exceptions

from preskool_dr.core.base.errors import ArchivedError
from preskool_dr.core.storage.s3client import ARCHIVED_CLASSES, RESTORE_WAIT, S3Client, S3Object


def archived_error(store: S3Client, name: str, obj: S3Object) -> ArchivedError:
    where = store.url(name)
    wait = RESTORE_WAIT.get(obj.storage_class, "hours")
    if obj.restore_state == "in-progress":
        return ArchivedError(
            f"{where} is in {obj.storage_class} and its restore is still in progress "
            f"(takes {wait}); retry later, `preskool-dr list --source s3` shows the state"
        )
    return ArchivedError(
        f"{where} is in {obj.storage_class} and not restored yet; request a restore with "
        f"`preskool-dr verify {where} --request-restore` (or `g` on it in the TUI's "
        f"backup list), then retry in {wait}"
    )


def request_restore(store: S3Client, name: str, days: int = 7, tier: str = "Standard") -> str:
    """Ask S3 to restore an archived object; returns a one-line status for the operator."""
    obj = store.head(name)
    where = store.url(name)
    if obj.storage_class not in ARCHIVED_CLASSES:
        return f"{where} is in {obj.storage_class} storage: no restore needed"
    if obj.restore_state == "available":
        return f"{where} is already restored and can be downloaded now"
    wait = RESTORE_WAIT.get(obj.storage_class, "hours")
    if obj.restore_state == "in-progress":
        return f"restore of {where} already in progress (takes {wait}); retry later"
    try:
        store.client.restore_object(
            Bucket=store.bucket,
            Key=store.prefix + name,
            RestoreRequest={"Days": days, "GlacierJobParameters": {"Tier": tier}},
        )
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "RestoreAlreadyInProgress":
            return f"restore of {where} already in progress (takes {wait}); retry later"
        raise store.error(exc, name, "request a restore of") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise store.error(exc, name, "request a restore of") from None
    return (
        f"restore requested for {where} ({tier} tier, {obj.storage_class}: usually {wait}; "
        f"kept {days} days); check with `preskool-dr list --source s3`, then retry"
    )
