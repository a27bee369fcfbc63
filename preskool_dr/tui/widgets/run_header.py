"""The top line: what is being restored, where, which run; `[DRILL]` in a rehearsal. At 80
columns it drops the program's name, then the server, so the run id is never cut off."""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static


def header_labels(mode: str, target: str, run: str) -> list[str]:
    """The header's wordings, longest first: `target` is `db@host:port`."""
    database = target.split("@", 1)[0]
    return [
        f"preskool-dr · {mode} {target} · {run}",
        f"{mode} {target} · {run}",
        f"{mode} {database} · {run}",
    ]


class RunHeader(Horizontal):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._labels: list[str] = []

    def compose(self) -> ComposeResult:
        yield Static(id="header-label", markup=False)
        yield Static("[DRILL]", id="drill-banner", markup=False)

    def show(self, *, drill: bool, target: str, run_id: str | None) -> None:
        mode = "DRILL" if drill else "RESTORE"
        run = f"run {run_id}" if run_id else "no run yet"
        self._labels = header_labels(mode, target, run)
        self.query_one("#drill-banner", Static).display = drill
        self._draw()
        self.call_after_refresh(self._draw)  # the banner may have changed the label's width

    def on_resize(self, event: events.Resize) -> None:
        self.call_after_refresh(self._draw)  # the label's width is known after the layout

    def _draw(self) -> None:
        if not self._labels:
            return
        label = self.query_one("#header-label", Static)
        width = label.content_size.width
        fitting = [text for text in self._labels if len(text) <= width] if width else []
        label.update(fitting[0] if fitting else self._labels[0 if not width else -1])
