"""Every message of the app: into the log panel, and a warning or an error also as a toast,
never over a dialog (tui/app.py's DrApp is a NoticeApp)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from textual.app import App
from textual.notifications import SeverityLevel
from textual.screen import ModalScreen

from preskool_dr.tui.screens.checklist import ChecklistScreen
from preskool_dr.tui.widgets.log_panel import LogPanel

TOAST_CHARS = 160  # a longer message is cut in its toast; the log has all of it
SMALL_SCREEN_COLUMNS = 100  # below this a toast covers much of the panels: one at a time
SEVERITY_LABELS: dict[SeverityLevel, str] = {
    "information": "info",
    "warning": "warn",
    "error": "error",
}


@dataclass(frozen=True)
class Toast:
    """A notification waiting for the dialog over the screen to close."""

    message: str
    title: str
    severity: SeverityLevel
    timeout: float | None
    markup: bool


class NoticeApp(App[int]):
    """The App's notices; its first screen is the checklist, whose log panel gets them all."""

    waiting_toasts: list[Toast]  # warnings that came while a dialog was open

    @property
    def checklist_screen(self) -> ChecklistScreen:
        return cast(ChecklistScreen, self.screen_stack[0])

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
        source: str = "",
    ) -> None:
        """Every message of the app comes here. It goes into the log (panel 4, under
        `source`, else the title, else its severity); only a warning or an error is also a
        toast, and never over a dialog: it waits until the dialog is closed. A toast hides
        part of the panels at 80 columns, so a small screen shows one at a time. Plain text
        by default: engine messages may hold brackets that are not markup."""
        self._log_notice(source or title.lower() or SEVERITY_LABELS[severity], message, severity)
        if severity == "information":
            return
        toast = Toast(message, title, severity, timeout, markup)
        if isinstance(self.screen, ModalScreen):
            self.waiting_toasts.append(toast)
        else:
            self._show_toast(toast)

    def show_waiting_toasts(self) -> None:
        """The dialog is closed: what came while it was open, the newest last."""
        waiting, self.waiting_toasts = self.waiting_toasts, []
        for toast in waiting:
            self._show_toast(toast)

    def _show_toast(self, toast: Toast) -> None:
        if self.size.width < SMALL_SCREEN_COLUMNS:
            self.clear_notifications()
        text = toast.message
        if len(text) > TOAST_CHARS:
            text = text[:TOAST_CHARS] + "… (all of it in the log: 4)"
        super().notify(
            text,
            title=toast.title,
            severity=toast.severity,
            timeout=toast.timeout,
            markup=toast.markup,
        )

    def _log_notice(self, source: str, message: str, severity: SeverityLevel) -> None:
        panels = self.checklist_screen.query(LogPanel) if self.screen_stack else None
        if panels:
            panels.first().add(source, message, style="bold" if severity == "error" else "")
