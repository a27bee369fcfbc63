"""The right-hand panels (keys 1-4): backups, checksum, restore, log, and the summary once
the run has ended. One is shown at a time, its tab reversed in the border; a step that
starts brings up the panel it needs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import ContentSwitcher

from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.events import LogLine, Progress, StepChanged, StepStatus
from preskool_dr.core.restore.journal import BackupChoice, RunState
from preskool_dr.core.storage import checksum
from preskool_dr.core.storage.meta import read_meta
from preskool_dr.tui.widgets.backup_browser import BackupBrowser
from preskool_dr.tui.widgets.checksum_panel import ChecksumPanel
from preskool_dr.tui.widgets.log_panel import LogPanel
from preskool_dr.tui.widgets.restore_panel import RestorePanel
from preskool_dr.tui.widgets.summary_panel import SummaryPanel

PANELS = (("backups", "Backups"), ("checksum", "Checksum"), ("restore", "Restore"), ("log", "Log"))
PANEL_FOR_STEP = {
    "identify": "backups",
    "download": "restore",
    "verify": "checksum",
    "restore": "restore",
}


class RunPanels(Vertical):
    """`#panels`: a ContentSwitcher of the four panels."""

    def __init__(self, now: Callable[[], datetime], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.now = now
        self.run_ended = False  # the summary has something to say: its tab is shown

    def compose(self) -> ComposeResult:
        with ContentSwitcher(initial="backups", id="switcher"):
            yield BackupBrowser(self.now, id="backups")
            yield ChecksumPanel(id="checksum")
            yield RestorePanel(id="restore")
            yield LogPanel(self.now, id="log")
            yield SummaryPanel(id="summary")

    def show(self, name: str) -> None:
        self.query_one(ContentSwitcher).current = name
        tabs = [
            f"[reverse] {i}:{label} [/]" if key == name else f" {i}:{label} "
            for i, (key, label) in enumerate(PANELS, start=1)
        ]
        if self.run_ended:  # no room left at the top at 80 columns: its tab is at the bottom
            self.border_subtitle = "[reverse] 5:Summary [/]" if name == "summary" else " 5:Summary "
        self.border_title = "".join(tabs)

    def show_summary(self, lines: list[str], *, aside_kept: bool) -> None:
        """The run has ended: its summary in front, focused (so `d` and scrolling work)."""
        self.run_ended = True
        summary = self.query_one(SummaryPanel)
        summary.show(lines, aside_kept=aside_kept)
        self.show("summary")
        summary.focus()

    def step_changed(self, event: StepChanged, state: RunState | None) -> None:
        """What a step's start or end means for the panels."""
        if event.status is StepStatus.RUNNING:
            self._step_started(event.step_id, state.backup if state else None)
        elif event.step_id in ("download", "restore") and state is not None:
            self.query_one(RestorePanel).finish(event.step_id, state.step(event.step_id))
        if event.step_id == "verify" and state is not None:
            self.query_one(ChecksumPanel).show_record(state.step("verify"), state.verify)
        if event.step_id == "identify" and event.status is StepStatus.DONE and state:
            self.show_backup(state.backup)

    def _step_started(self, step_id: str, backup: BackupChoice | None) -> None:
        """Show the panel the step needs, ready for its progress."""
        self.show(PANEL_FOR_STEP.get(step_id, "log"))
        if backup is None:
            return
        if step_id == "download":
            self.query_one(RestorePanel).begin(f"Download {backup.name}")
        elif step_id == "restore":
            meta = read_meta(Path(backup.local_path)) if backup.local_path else None
            self.query_one(RestorePanel).begin(
                f"Restore {backup.name}", meta.row_counts if meta else None
            )
        elif step_id == "verify":
            self.show_backup(backup)

    def show_backup(self, backup: BackupChoice | None) -> None:
        """The chosen backup and the MD5 its sidecar expects, in the checksum panel."""
        if backup is None:
            return
        expected = "- (the backup is not local yet: step 3 fetches it)"
        if backup.local_path:
            path = Path(backup.local_path)
            try:
                expected = checksum.read_sidecar(checksum.sidecar_path(path), path.name).md5
            except DrError as exc:
                expected = f"none: {exc}"
        self.query_one(ChecksumPanel).show_backup(backup.name, expected)

    def show_resumed(self, state: RunState) -> None:
        self.show_backup(state.backup)
        if state.step("verify").status is not StepStatus.PENDING:
            self.query_one(ChecksumPanel).show_record(state.step("verify"), state.verify)

    def show_line(self, event: LogLine) -> None:
        """A line of a step's output: the log, and the restore panel for steps 3 and 6."""
        self.query_one(LogPanel).add(event.source, event.text)
        if event.step_id in ("restore", "download"):
            self.query_one(RestorePanel).write_line(event.text)

    def show_progress(self, progress: Progress) -> None:
        if progress.phase == "verify":
            self.query_one(ChecksumPanel).show_progress(progress)
        else:
            self.query_one(RestorePanel).show_progress(progress)
