"""The top line: what is being restored, where, which run; `[DRILL]` in a rehearsal."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static


class RunHeader(Horizontal):
    def compose(self) -> ComposeResult:
        yield Static(id="header-label", markup=False)
        yield Static("[DRILL]", id="drill-banner", markup=False)

    def show(self, *, drill: bool, target: str, run_id: str | None) -> None:
        mode = "DRILL" if drill else "RESTORE"
        run = f"run {run_id}" if run_id else "no run yet"
        self.query_one("#header-label", Static).update(f"preskool-dr · {mode} {target} · {run}")
        self.query_one("#drill-banner", Static).display = drill
