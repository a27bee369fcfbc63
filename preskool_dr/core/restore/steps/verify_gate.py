"""The verify gate as steps 5 and 6 pass it: they use only the bytes step 4 verified.

The backup, and the custom-format companion step 4 accepted, are each opened once and
checked against what step 4 recorded (core/restore/pinned.py does the pinning).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.events import Notice
from preskool_dr.core.base.steps import StepId
from preskool_dr.core.restore import pinned
from preskool_dr.core.restore.journal import StepRecord
from preskool_dr.core.restore.steps.context import StepRun, chosen_backup, due_again
from preskool_dr.core.storage import checksum
from preskool_dr.core.storage.layout import companion_path


@contextlib.contextmanager
def verified_files(
    run: StepRun,
    record: StepRecord,
    cancel: threading.Event,
    *,
    rehash: bool,
    held: Path | None = None,
) -> Iterator[tuple[Path, Path | None]]:
    """Yields the paths the loaders open (they resolve to the open, checked files): the
    backup, and its companion unless the method is serial. GateError when the backup is
    not the one step 4 verified; a companion that is not is dropped with a warning (the
    plain file is then loaded) when step 4 read the plain file whole, else GateError too.
    `rehash` reads each file again in full (step 5, before
    anything is destroyed), except `held`, the file a load started early holds open and
    hashed through its descriptor (its identity is compared); leaving the block checks
    that nothing wrote to them meanwhile."""
    choice = chosen_backup(run)
    if not choice.local_path or choice.md5 is None:
        raise DrError("step 4 has not verified the chosen backup: run step 4 (Verify) first")
    folder = run.config.state_dir / "load" / run.state.run_id

    def pin(
        path: Path, md5: str, identity: checksum.FileIdentity | None
    ) -> contextlib.AbstractContextManager[pinned.Pinned]:
        return pinned.open_verified(
            path,
            md5,
            identity,
            folder,
            rehash=rehash and path != held,
            on_event=run.on_event,
            step_id=record.id,
            cancel=cancel,
        )

    backup = Path(choice.local_path)
    with contextlib.ExitStack() as stack:
        plain = stack.enter_context(pin(backup, choice.md5, choice.identity))
        run.state.backup = choice = dataclasses.replace(choice, identity=plain.identity)
        companion = None
        if choice.companion_md5 is not None and run.config.restore.method != "serial":
            try:
                companion = stack.enter_context(
                    pin(
                        companion_path(backup),
                        choice.companion_md5,
                        choice.companion_identity,
                    )
                )
            except pinned.GateError as exc:
                if run.state.verify is None or run.state.verify.skipped is not None:
                    # step 4 checked the plain file for its MD5 only, as the companion was
                    # to load: its gzip and content are unproven, so it does not stand in
                    due_again(
                        run,
                        StepId.VERIFY,
                        f"the companion changed after this step accepted it: run it again "
                        f"to read {backup.name} whole",
                    )
                    raise pinned.GateError(
                        f"the custom-format companion is not the one step 4 accepted "
                        f"({exc}), and step 4 checked {backup.name} for its MD5 only: run "
                        f"step 4 again (it then reads {backup.name} whole), then this step"
                    ) from None
                run.on_event(
                    Notice(
                        "warn",
                        f"custom-format companion not used ({exc}); restoring the plain backup",
                        record.id,
                    )
                )
                run.state.backup = choice = dataclasses.replace(
                    choice, companion_md5=None, companion_identity=None
                )
            else:
                run.state.backup = dataclasses.replace(
                    choice, companion_identity=companion.identity
                )
        run.save()
        yield plain.load_path, companion.load_path if companion else None
