"""When was the incident declared? The RTO clock runs from here. Enter accepts now."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

FORMAT = "%Y-%m-%d %H:%M"


def parse_incident_time(text: str, now: datetime) -> datetime:
    """`YYYY-MM-DD HH:MM` in UTC; ValueError with a sentence the operator can act on."""
    try:
        when = datetime.strptime(text.strip(), FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not YYYY-MM-DD HH:MM (UTC)") from None
    if when > now:
        raise ValueError(f"{text.strip()} UTC is in the future: the incident has happened")
    return when


class IncidentTimeScreen(ModalScreen[datetime]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "accept_now", "Use now", id="incident-now")
    ]

    def __init__(self, now: datetime, current: datetime | None = None) -> None:
        super().__init__()
        self.now = now
        self.current = current or now

    def compose(self) -> ComposeResult:
        with Vertical(id="incident-dialog", classes="dialog") as dialog:
            dialog.border_title = "Incident declared at (UTC)"
            yield Static(
                "The RTO clock runs from the moment the incident was declared. "
                "Press Enter to use the time shown, or edit it first."
            )
            yield Input(self.current.strftime(FORMAT), id="incident-input")
            yield Static("", id="incident-error", markup=False)
            yield Static("Enter accepts · Esc uses the time shown", classes="dialog-keys")

    @on(Input.Submitted, "#incident-input")
    def _submitted(self, event: Input.Submitted) -> None:
        try:
            when = parse_incident_time(event.value, self.now)
        except ValueError as exc:
            self.query_one("#incident-error", Static).update(str(exc))
            return
        # keep the seconds when the operator accepted the minute shown for "now"
        self.dismiss(
            self.current if when == self.current.replace(second=0, microsecond=0) else when
        )

    def action_accept_now(self) -> None:
        self.dismiss(self.current)
