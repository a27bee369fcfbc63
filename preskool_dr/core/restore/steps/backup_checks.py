"""Steps 2, 3 and 4: choose the backup, fetch it, and prove it whole before any downtime.

2 identify resolves the operator's choice (a path, a name, s3://..., latest) to one backup;
3 download fetches it from S3 when it is not local; 4 verify checks its MD5 against the
sidecar, its gzip stream and that it is whole pg_dump output (only the MD5 when step 6 will
load the custom-format companion, which it checks whole instead), and records what the
verify gate (steps 5 and 6, verify_gate.py) holds the file to. A downloaded copy that fails is
removed, so a retry fetches the original afresh.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import humanize

from preskool_dr.core.base import age
from preskool_dr.core.base.errors import DrError, NoSpaceError
from preskool_dr.core.base.events import Notice, StepStatus
from preskool_dr.core.base.steps import StepId
from preskool_dr.core.restore.journal import BackupChoice, StepRecord, VerifyRecord
from preskool_dr.core.restore.loaders import pg_restore
from preskool_dr.core.restore.steps import early_load, recreate_db
from preskool_dr.core.restore.steps.context import StepOutcome, StepRun, chosen_backup, due_again
from preskool_dr.core.storage import catalog, checksum
from preskool_dr.core.storage.fetch import discard_download, fetch_backup
from preskool_dr.core.storage.layout import companion_path


def identify_again(run: StepRun, record: StepRecord, cancel: threading.Event) -> StepOutcome:
    """Step 2 run from the checklist: the backup chosen before, else the latest."""
    return identify(run, run.state.backup.spec if run.state.backup else "latest")


def identify(run: StepRun, spec: str, found: catalog.BackupRecord | None = None) -> str:
    """Step 2 with the operator's choice (Engine.choose_backup); `found`: the lookup of
    `spec` its caller made a moment ago (`restore BACKUP` checks it exists before any run),
    taken instead of asking the bucket again."""
    state = run.state
    if found is None:
        found = catalog.resolve_backup(run.config, spec)
    local_path = str(found.local_path) if found.local_path else None
    choice = BackupChoice(
        spec=spec,
        name=found.name,
        time=found.time,
        local_path=local_path,
        s3_url=found.s3_url,
        size=found.size,
        # its identity: the full location, never the base name (another folder's file of
        # the same name is another backup)
        location=os.path.abspath(local_path) if local_path else found.s3_url,
    )
    before = state.backup
    if before is None or before.location != choice.location or local_path is None:
        # Another backup, or one only in S3 (chosen again, the bucket may hold other
        # bytes by now): whatever was downloaded or verified before no longer counts.
        for step_id in (StepId.DOWNLOAD, StepId.VERIFY):
            dep = run.step(step_id)
            if dep.status is not StepStatus.PENDING:
                dep.status, dep.detail = StepStatus.PENDING, "backup changed: redo"
        state.verify = None
    if before is not None and before.downloaded and before.local_path == choice.local_path:
        choice = dataclasses.replace(choice, downloaded=True)  # still our S3 download
    state.backup = choice
    rpo = state.rpo_seconds or 0.0
    where = " + ".join(found.locations) or "?"
    size = humanize.naturalsize(found.size, binary=True) if found.size else "size unknown"
    return (
        f"{found.name} ({found.kind}, {size}, {where}); RPO "
        f"{humanize.precisedelta(rpo, minimum_unit='minutes', format='%0.0f')}"
    )


def download(run: StepRun, record: StepRecord, cancel: threading.Event) -> StepOutcome:
    """Step 3."""
    choice = chosen_backup(run)
    if choice.local_path and Path(choice.local_path).exists():
        return f"already local: {choice.local_path}"
    if choice.s3_url is None:
        # Resolving the spec again ("latest") could pick another backup than step 2 chose.
        raise DrError(
            f"{choice.name}, chosen in step 2, is no longer at {choice.local_path} and has "
            "no S3 copy: put it back, or choose another backup in step 2"
        )
    run.fetched.clear()

    def companion_ready(dest: Path, remaining: int) -> bool:
        # the companion came first with the MD5 its meta records: step 6's load can start
        # now, while the .sql.gz downloads (early_load.py); when it does, the .sql.gz is
        # only hashed on its way down, as step 4 would read it (verify)
        if run.loads_early and run.early_load is None and not cancel.is_set():
            run.early_load = early_load.start(run, record.id, cancel, downloading=(dest, remaining))
        return run.early_load is not None and run.early_load.holds is not None

    path = fetch_backup(
        run.config,
        choice.s3_url,
        on_event=run.on_event,
        step_id=record.id,
        cancel=cancel,
        with_companion=run.config.restore.method != "serial",
        checked=lambda result: run.fetched.__setitem__(str(result.path), result),
        companion_ready=companion_ready,
    )
    run.state.backup = dataclasses.replace(choice, local_path=str(path), downloaded=True)
    return f"downloaded to {path}"


def verify(run: StepRun, record: StepRecord, cancel: threading.Event) -> StepOutcome:
    """Step 4."""
    state = run.state
    choice = chosen_backup(run)
    if not choice.local_path:
        raise DrError("the backup is not local yet: run step 3 (Download) first")
    if run.loads_early and run.early_load is None:
        # step 6's load runs beside steps 4 and 5 (production is untouched until step 5);
        # step 6 takes it only if step 4 passed
        run.early_load = early_load.start(run, record.id, cancel)
    # an encrypted backup is decrypted and checked here, before any downtime: without the
    # identity there is nothing step 6 could load
    identities = (
        age.need_identities(run.config.encryption.identity, choice.name)
        if age.is_encrypted_name(choice.name)
        else None
    )
    downloaded = choice.downloaded
    backup = Path(choice.local_path)
    anchor, _ = checksum.expected_md5(backup)
    companion = (
        None
        if identities or anchor is None
        else _accepted_companion(run, backup, anchor, downloaded, record, cancel)
    )
    result, read_once = _read_backup(run, record, cancel, companion, identities)
    state.verify = VerifyRecord(
        expected_md5=result.expected_md5,
        actual_md5=result.actual_md5,
        md5_ok=result.md5_ok,
        gzip_ok=result.gzip_ok,
        gzip_error=result.gzip_error,
        sidecar_error=result.sidecar_error,
        dump_error=result.dump_error if result.gzip_ok else None,
        skipped=result.skipped,
    )
    if not result.ok:
        if downloaded:
            raise DrError(f"{result.describe()}; {_discard_download(run, record)}")
        raise DrError(result.describe() + "; choose another backup in step 2")
    if companion is not None and result.actual_md5 != anchor:
        # the companion was accepted on the word of a meta naming `anchor`, the sidecar as
        # it was then: the file just read is another one
        raise DrError(
            f"{choice.name} or its sidecar changed while step 4 read them (MD5 {anchor} "
            f"when the companion was accepted, {result.actual_md5} now): stop whatever "
            "writes to BACKUP_DIR, then run step 4 again"
        )
    if result.identity is None:
        if not Path(choice.local_path).is_file():
            raise DrError(
                f"{choice.local_path} is not a regular file (a pipe or device gives step 6 "
                "other bytes than step 4 read): copy it into BACKUP_DIR and choose the "
                "copy in step 2"
            )
        raise DrError(
            f"{choice.name} changed while step 4 read it: stop whatever writes to it, "
            "then run step 4 again"
        )
    if run.step(StepId.RECREATE_DB).status is not StepStatus.PENDING and choice.md5 not in (
        None,
        result.actual_md5,
    ):
        # Step 5 replaced the database on the word of the backup verified before: step 6
        # loads that backup or nothing.
        raise DrError(
            f"{choice.local_path} now has MD5 {result.actual_md5}, but step 5 replaced "
            f"the database on the strength of the backup with MD5 {choice.md5}: put that "
            f"file back and run step 4 again ({recreate_db.production_state(state)})"
        )
    # What the verify gate holds steps 5 and 6 to: this MD5, in this file (core/restore/pinned.py),
    # and the companion accepted against the meta that names this MD5 (the sidecar's, which
    # the file has: result.ok)
    state.backup = dataclasses.replace(
        choice,
        md5=result.actual_md5,
        identity=result.identity,
        companion_md5=companion.actual_md5 if companion else None,
        companion_identity=companion.identity if companion else None,
    )
    # the last check before the headless restore takes the app offline (step 1)
    how = " (checked while step 3 downloaded it: not read again)" if read_once else ""
    return f"{result.describe()}{how}; {_server_space(run, record)}"


def _read_backup(
    run: StepRun,
    record: StepRecord,
    cancel: threading.Event,
    companion: checksum.VerifyResult | None,
    identities: Sequence[Any] | None,
) -> tuple[checksum.VerifyResult, bool]:
    """Step 4's findings on the chosen backup, and whether step 3's download made them (the
    file is not read again). What step 6 will load is read whole; when that is the accepted
    custom-format `companion`, the .sql.gz (the backup of record, and the anchor of the
    meta that vouches for the companion) gets the runbook's MD5 check, and its gzip and
    content are read if it is ever loaded (every load checks them as it reads) and by
    `preskool-dr verify`. One whose MD5 fails is read whole, so the operator gets every
    finding (a truncated copy says so)."""
    choice = chosen_backup(run)

    def read(deep: bool) -> checksum.VerifyResult:
        return checksum.verify_with_sidecar(
            Path(choice.local_path or ""),
            on_event=run.on_event,
            step_id=record.id,
            cancel=cancel,
            check_gzip=deep,
            check_dump=deep,
            identities=identities,
        )

    result = _checked_while_downloading(run, choice, deep=companion is None)
    read_once = result is not None
    if result is None:
        result = read(deep=companion is None)
    if not result.md5_ok and not result.gzip_checked:
        result, read_once = read(deep=True), False
    if companion is not None and not result.gzip_checked:
        result = dataclasses.replace(result, skipped=_loads_instead(companion))
    return result, read_once


def _server_space(run: StepRun, record: StepRecord) -> str:
    """Step 4's server-space check. A load started early writes before step 5 drops the
    target, so it needs its room without that drop: when it lacks it, it is stopped (step 6
    loads after step 5) and the restore is measured as if none had started."""
    if run.early_load is not None:
        try:
            return recreate_db.server_space(run, load_first=True)
        except NoSpaceError as exc:
            run.on_event(Notice("warn", f"the load started early is stopped: {exc}", record.id))
            run.early_load.stop()
            run.early_load = None
    return recreate_db.server_space(run)


def _checked_while_downloading(
    run: StepRun, choice: BackupChoice, deep: bool
) -> checksum.VerifyResult | None:
    """Step 3's findings for the file it downloaded in this process (the MD5, and the gzip
    and content checks unless the companion loads, made in the download's one pass:
    s3download.py), compared with the sidecar as it is now; None when there are none, they
    lack the gzip and content checks that `deep` asks for, or the file is no longer the one
    step 3 wrote (same device, inode, size, mtime and ctime): step 4 then reads it again."""
    found = run.fetched.pop(choice.local_path or "", None)
    if found is None or not choice.downloaded or found.identity is None:
        return None
    if deep and not found.gzip_checked:
        return None
    path = Path(found.path)
    if checksum.FileIdentity.at(path, follow_symlinks=False) != found.identity:
        return None
    expected, problem = checksum.expected_md5(path)
    return dataclasses.replace(found, expected_md5=expected, sidecar_error=problem)


def _discard_download(run: StepRun, record: StepRecord) -> str:
    """A downloaded copy that failed step 4 is removed (discard_download says why)
    and step 3 is due again, so a retry fetches the S3 original afresh."""
    choice = chosen_backup(run)
    discard_download(Path(choice.local_path or ""))
    run.state.backup = dataclasses.replace(choice, local_path=None, downloaded=False)
    due_again(
        run, StepId.DOWNLOAD, "the downloaded copy failed step 4 and was removed: download it again"
    )
    run.on_event(Notice("warn", f"removed the downloaded copy of {choice.name}", record.id))
    return (
        "the downloaded copy was removed: run step 3 to download it again from S3, "
        "or choose another backup in step 2"
    )


def _accepted_companion(
    run: StepRun,
    backup: Path,
    anchor: str,
    downloaded: bool,
    record: StepRecord,
    cancel: threading.Event,
) -> checksum.VerifyResult | None:
    """The custom-format companion step 6 will load, verified before any downtime against
    the MD5 the backup's .meta.json recorded, that meta naming `anchor`, the MD5 in the
    backup's sidecar (pg_restore.usable_companion; step 4 then holds the backup to that
    MD5); None when there is none or it is refused (a Notice says why; one step 3
    downloaded is removed, so a retry fetches it afresh): step 6 restores the plain file,
    which step 4 then reads whole. None too when a load started early reads the plain file
    (step 4 reads whole what is loaded), and after step 5 for any companion but the one
    accepted before it (step 6 loads what step 5 was decided on, or the plain file read
    whole). A companion a load started early hashed and still holds is not read again."""
    companion = companion_path(backup)
    if run.config.restore.method == "serial" or not companion.is_file():
        return None
    usable = pg_restore.usable_companion(
        backup,
        anchor,
        on_event=run.on_event,
        step_id=record.id,
        cancel=cancel,
        hashed=_hashed_by_early_load(run, companion),
    )
    refused = _not_this_run(run, usable, backup) if usable is not None else None
    if refused is not None:
        run.on_event(
            Notice(
                "warn",
                f"custom-format companion {companion.name} not used: {refused}; step 4 reads "
                f"{backup.name} whole, and step 6 restores it",
                record.id,
            )
        )
        usable = None
    if usable is None and downloaded:
        for path in (companion, checksum.sidecar_path(companion)):
            path.unlink(missing_ok=True)
    return usable


def _not_this_run(run: StepRun, usable: checksum.VerifyResult, backup: Path) -> str | None:
    """Why a companion that passed its own checks may still not be what this run loads."""
    held = run.early_load.holds if run.early_load is not None else None
    if held is not None and held.path == backup:
        return f"step 6's load started early from {backup.name}, before the companion passed"
    before = chosen_backup(run).companion_md5
    # step 5 done, or failed after it moved the target aside (a step 5 that failed before
    # touching anything decided nothing)
    replaced = run.step(StepId.RECREATE_DB).status is StepStatus.DONE or run.state.aside_state
    if replaced and usable.actual_md5 != before:
        return (
            "it is not the one step 4 accepted before step 5 replaced the database "
            f"({'none' if before is None else 'MD5 ' + before}, now {usable.actual_md5})"
        )
    return None


def _hashed_by_early_load(run: StepRun, companion: Path) -> checksum.VerifyResult | None:
    """The companion's MD5 as the load started early computed it through the file it holds
    open, when `companion` still names that very file (device, inode, size, mtime, ctime:
    the gate's own test, core/restore/pinned.py)."""
    held = run.early_load.holds if run.early_load is not None else None
    if held is None or held.path != companion:
        return None
    if checksum.FileIdentity.at(companion, follow_symlinks=False) != held.identity:
        return None
    return checksum.VerifyResult(
        path=companion,
        size=held.identity.size,
        expected_md5=None,
        actual_md5=held.md5,
        gzip_ok=True,
        gzip_error=None,
        gzip_checked=False,
        identity=held.identity,
    )


def _loads_instead(companion: checksum.VerifyResult) -> str:
    return (
        f"step 6 loads {companion.path.name}, which has the MD5 recorded at backup time; "
        "they are checked if this file is ever loaded, and by `preskool-dr verify`"
    )
