"""Step 4 at a glance: expected vs computed MD5, gzip integrity, whether the text is whole
pg_dump output, progress, verdict."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import ProgressBar, Static

from preskool_dr.core.base.events import Progress, StepStatus
from preskool_dr.core.restore.journal import StepRecord, VerifyRecord
from preskool_dr.tui.format import REDRAW_SECONDS, size


class ChecksumPanel(Vertical):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._pending: Progress | None = None

    def compose(self) -> ComposeResult:
        # The verdict first: notifications stack up at the bottom right of the screen.
        yield Static("not checked yet", id="checksum-verdict", markup=False)
        yield Static("No backup chosen yet.", id="checksum-file", markup=False)
        yield Static("expected  -", id="checksum-expected", markup=False)
        yield Static("computed  -", id="checksum-computed", markup=False)
        yield Static("", id="checksum-md5", markup=False)
        yield Static("gzip      not checked yet", id="checksum-gzip", markup=False)
        yield Static("content   not checked yet", id="checksum-dump", markup=False)
        yield ProgressBar(total=None, show_eta=False, id="checksum-bar")

    def on_mount(self) -> None:
        self.query_one("#checksum-bar").display = False  # shown while hashing
        self.set_interval(REDRAW_SECONDS, self._flush)

    def show_backup(self, name: str, expected: str) -> None:
        """`expected` is the sidecar's digest, or why there is none."""
        self.query_one("#checksum-file", Static).update(name)
        self.query_one("#checksum-expected", Static).update(f"expected  {expected}")

    def show_progress(self, progress: Progress) -> None:
        self._pending = progress

    def _flush(self) -> None:
        progress, self._pending = self._pending, None
        if progress is None:
            return
        if progress.total:
            bar = self.query_one("#checksum-bar", ProgressBar)
            bar.update(total=progress.total, progress=progress.done)
            bar.display = True
        self.query_one("#checksum-computed", Static).update(
            f"computed  hashing… {size(progress.done)} of {size(progress.total)}"
        )

    def show_record(self, record: StepRecord, verify: VerifyRecord | None) -> None:
        """The verify step's state and, once it has run, its findings."""
        verdict = self.query_one("#checksum-verdict", Static)
        self.set_class(record.status is StepStatus.DONE, "-pass")
        self.set_class(record.status is StepStatus.FAILED, "-fail")
        if record.status is StepStatus.RUNNING:
            verdict.update("checking… (one read of the file)")
            self.query_one("#checksum-bar", ProgressBar).display = False
            return
        self._pending = None  # a late progress update must not overwrite the result
        bar = self.query_one("#checksum-bar", ProgressBar)
        if record.status is StepStatus.DONE and bar.total:
            bar.update(progress=bar.total)  # the whole file was read
        else:
            bar.display = False
        if verify is not None:
            expected = verify.expected_md5 or f"none: {verify.sidecar_error or 'no sidecar'}"
            self.query_one("#checksum-expected", Static).update(f"expected  {expected}")
            self.query_one("#checksum-computed", Static).update(f"computed  {verify.actual_md5}")
            if verify.md5_ok:
                md5 = "MD5       ✔ matches the sidecar"
            elif verify.expected_md5 is None:
                md5 = "MD5       ✖ no usable sidecar to compare with"
            else:
                md5 = "MD5       ✖ does not match the sidecar"
            self.query_one("#checksum-md5", Static).update(md5)
            if verify.skipped:
                gzip = f"gzip      not read: {verify.skipped}"
            elif verify.gzip_ok:
                gzip = "gzip      ✔ decompresses cleanly"
            else:
                gzip = f"gzip      ✖ {verify.gzip_error or 'damaged'}"
            self.query_one("#checksum-gzip", Static).update(gzip)
            if verify.skipped:
                dump = "content   not read (the same reason)"
            elif not verify.gzip_ok:
                dump = "content   not checked: the gzip data is damaged"
            elif verify.dump_error:
                dump = f"content   ✖ {verify.dump_error}"
            else:
                dump = "content   ✔ whole pg_dump output"
            self.query_one("#checksum-dump", Static).update(dump)
        if record.status is StepStatus.DONE and verify is not None and verify.skipped:
            verdict.update("✔ PASS: checksum OK; step 6 loads the checked companion")
        elif record.status is StepStatus.DONE:
            verdict.update("✔ PASS: checksum, gzip and content OK")
        elif record.status is StepStatus.FAILED:
            verdict.update("✖ FAIL: this backup cannot be trusted; choose another (step 2)")
            if verify is None:
                self.query_one("#checksum-md5", Static).update(record.detail)
        else:
            verdict.update("not checked yet")
