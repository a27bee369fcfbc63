"""The PITR form: what the archive can reach, then the target time, a new data directory
and a port, all checked before anything starts, then a typed confirmation. Posts `Started`
once the App has started the recovery."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Label, Static
from textual.worker import get_current_worker

from preskool_dr.core.base.errors import DrError, UsageError
from preskool_dr.core.base.settings import Config
from preskool_dr.core.pitr.plan import RecoverableRange, plan_recovery
from preskool_dr.core.pitr.request import PitrRequest, check_request, parse_target
from preskool_dr.core.pitr.run import PitrRun
from preskool_dr.core.pitr.server import SERVER_OS_USER, running_as_root
from preskool_dr.tui.screens.confirm_name import ConfirmNameScreen
from preskool_dr.tui.widgets.pitr_ranges import PitrRanges, RangesProvider, seconds

TARGET_FORMAT = "YYYY-MM-DD HH:MM[:SS]"
HINT = (
    "Enter checks once every field is filled (else goes to the next empty one) · Tab moves · "
    "Esc back to the checklist · F5 reads the archive again"
)
FIELDS = ("pitr-target", "pitr-dir", "pitr-port")
# A refused request's field (PitrRequest's name for it) and the input that holds it.
INPUT_FOR_FIELD = {"target": "pitr-target", "data_dir": "pitr-dir", "port": "pitr-port"}


class PitrForm(Vertical):
    """`#pitr-form`. `start` starts the recovery in the App's worker (DrError if refused)."""

    class Started(Message):
        """The operator confirmed and the recovery is under way."""

        def __init__(self, runner: PitrRun, request: PitrRequest) -> None:
            super().__init__()
            self.runner = runner
            self.request = request

    class Planned(Message):
        """The target checked against the archive: the base backup it starts from, or why not."""

        def __init__(
            self, request: PitrRequest, chosen: RecoverableRange | None, error: Exception | None
        ) -> None:
            super().__init__()
            self.request = request
            self.chosen = chosen
            self.error = error

    def __init__(
        self,
        config: Config,
        *,
        start: Callable[[PitrRequest], PitrRun],
        ranges: RangesProvider,
        port: int,
        server_python: str = sys.executable,
        operator: str = "",
        drill: bool = False,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.config = config
        self.start = start
        self.ranges_provider = ranges
        self.default_port = port
        self.server_python = server_python
        self.operator = operator
        self.drill = drill
        self.checking = False
        self.started = False  # the recovery is under way: the form is done

    def compose(self) -> ComposeResult:
        with PitrRanges(self.config, self.ranges_provider, id="pitr-ranges-box") as box:
            box.border_title = "Recoverable targets (UTC)"
        with Vertical(id="pitr-fields"):
            for label, field, placeholder, value in (
                ("Target time (UTC)", "pitr-target", TARGET_FORMAT, ""),
                ("New data directory", "pitr-dir", "must not exist, or be empty", ""),
                ("Port", "pitr-port", "a free TCP port", str(self.default_port)),
            ):
                with Horizontal(classes="pitr-field"):
                    yield Label(label, classes="pitr-label")
                    yield Input(
                        value,
                        placeholder=placeholder,
                        id=field,
                        compact=True,
                        type="integer" if field == "pitr-port" else "text",
                    )
        yield Static("", id="pitr-error", markup=False)
        yield Static(HINT, id="pitr-hint", classes="dialog-keys", markup=False)

    @property
    def ranges(self) -> list[RecoverableRange] | None:
        return self.query_one(PitrRanges).ranges

    def reload_ranges(self) -> None:
        self.query_one(PitrRanges).reload()

    def show_error(self, message: str, field: str | None = None) -> None:
        self.query_one("#pitr-error", Static).update(Text(message))
        if field is not None:
            self.query_one(f"#{field}", Input).focus()

    def reopen(self, error: DrError | None) -> None:
        """The recovery was refused in its first step: the form again, filled in, with why."""
        self.started = False
        self.show_error(f"✖ {error}", "pitr-target")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        empty = [f for f in FIELDS if not self._value(f)]
        if empty:
            later = [f for f in empty if FIELDS.index(f) > FIELDS.index(event.input.id or "")]
            self.query_one(f"#{(later or empty)[0]}", Input).focus()
            return
        self.check()

    def _value(self, field: str) -> str:
        return self.query_one(f"#{field}", Input).value.strip()

    def check(self) -> None:
        """Everything that can be checked before the typed confirmation: the target's form,
        the directory and the port (check_request), then the target against the archive."""
        if self.checking or self.started:
            return
        try:
            target = parse_target(self._value("pitr-target"))
        except UsageError as exc:
            self.show_error(f"✖ {exc}; type {TARGET_FORMAT} in UTC", "pitr-target")
            return
        folder = self._value("pitr-dir")
        request = PitrRequest(
            target=target,
            data_dir=Path(folder),
            port=int(self._value("pitr-port")),  # the field takes digits only
            confirm=folder,  # the typed confirmation comes after these checks
            server_python=self.server_python,
            operator=self.operator,
            drill=self.drill,
        )
        try:
            data_dir = check_request(request)
        except UsageError as exc:
            self.show_error(f"✖ {exc}", INPUT_FOR_FIELD.get(exc.field or "", "pitr-dir"))
            return
        self.checking = True
        self.show_error(f"Checking {seconds(target)} UTC against the archive…")
        self._plan(replace(request, data_dir=data_dir, confirm=str(data_dir)))

    @work(thread=True, exclusive=True, exit_on_error=False, group="pitr-check", name="plan")
    def _plan(self, request: PitrRequest) -> None:
        try:
            planned = self.Planned(request, plan_recovery(self.config, request.target), None)
        except Exception as exc:  # shown under the fields
            planned = self.Planned(request, None, exc)
        if not get_current_worker().is_cancelled:
            self.post_message(planned)

    def on_pitr_form_planned(self, message: Planned) -> None:
        message.stop()
        self.checking = False
        request, chosen, error = message.request, message.chosen, message.error
        if chosen is None:
            text = str(error) if isinstance(error, DrError) else f"unexpected: {error!r}"
            self.show_error(f"✖ {text}", "pitr-target")
            return
        self.show_error("")
        self.app.push_screen(
            ConfirmNameScreen(
                "Start point-in-time recovery?",
                confirmation_body(request, chosen),
                str(request.data_dir),
                f"Type the data directory {request.data_dir} and press Enter:",
            ),
            lambda typed: self._confirmed(request, typed),
        )

    def _confirmed(self, request: PitrRequest, typed: str | None) -> None:
        if typed is None:
            self.show_error("Cancelled: nothing was started.")
            return
        try:
            runner = self.start(replace(request, confirm=typed))
        except DrError as exc:  # e.g. the port was taken meanwhile
            self.show_error(f"✖ {exc}", INPUT_FOR_FIELD.get(exc.field or "", "pitr-port"))
            return
        self.started = True
        self.post_message(self.Started(runner, request))


def confirmation_body(request: PitrRequest, chosen: RecoverableRange) -> Text:
    body = Text()
    body.append("Recover the whole cluster as it was at ")
    body.append(f"{seconds(request.target)} UTC", style="bold")
    body.append(":\n")
    body.append(f"· from base backup {chosen.base.name} (ended {seconds(chosen.start)})\n")
    body.append("· then the archived WAL replayed up to the target, and promoted\n")
    body.append("· into the NEW directory ")
    body.append(str(request.data_dir), style="bold")
    body.append(" (nothing else is touched)\n")
    body.append(f"· a server on port {request.port}, left running; WAL archiving off on it")
    if request.drill:
        body.append("\n· a drill: the copy is validated and the RTO/RPO signed into the drill log")
    if running_as_root():
        body.append(f"\n· run by the {SERVER_OS_USER} OS user")
    return body
