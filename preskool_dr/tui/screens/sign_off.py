"""The drill's sign-off, one flow for a restore drill and a PITR drill: the entry about to be
appended to the drill log, who signs it, the append, and what the operator is told."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from preskool_dr.core.base.errors import DrError
from preskool_dr.core.drill import record as drill
from preskool_dr.core.drill import signing
from preskool_dr.core.drill.append import NO_KEY_HINT, AppendResult
from preskool_dr.core.drill.signing import SigningKey
from preskool_dr.tui.format import hms


def sign_entry(
    app: App[Any],
    run: drill.DrillRun,
    *,
    what: str,
    performed_by: str,
    signer: str | None,
    key: SigningKey | None,
    log_path: Path | None,
) -> AppendResult:
    """Append the drill's signed entry. ssh-keygen may ask for the key's passphrase on the
    terminal itself, so the app gives it the screen while it runs."""
    if app.is_headless:
        return drill.record(
            run, performed_by=performed_by, signer=signer, key=key, log_path=log_path
        )
    with app.suspend():
        print(f"Signing the {what} as {performed_by}...", flush=True)
        return drill.record(
            run,
            performed_by=performed_by,
            signer=signer,
            key=key,
            log_path=log_path,
            interactive=True,
        )


def entry_preview(fields: dict[str, Any]) -> str:
    """The lines an ops lead reads before signing: what was restored, how fast, the verdict."""
    checks = fields.get("validation") or []
    passed = sum(1 for c in checks if c.get("ok"))
    rpo = fields.get("rpo_seconds")
    return "\n".join(
        [
            f"Backup      {fields.get('backup') or '-'}",
            f"MD5         {fields.get('backup_md5') or '-'}",
            f"Target      {fields.get('target')}   run {fields.get('run_id')}",
            f"RTO         {hms(fields['rto_seconds'])} of {hms(fields['rto_target_seconds'])}"
            f"  {'✔' if fields.get('rto_ok') else '✖'}",
            f"RPO         {hms(rpo) if rpo is not None else '-'} of "
            f"{hms(fields['rpo_target_seconds'])}  {'✔' if fields.get('rpo_ok') else '✖'}",
            f"Validation  {passed} of {len(checks)} checks passed",
            f"Result      {str(fields.get('result', '?')).upper()} (run {fields.get('run_result')})",
        ]
    )


class SignOffScreen(ModalScreen[str | None]):
    """Dismisses with the signer's name; None on Esc (the entry can be recorded later)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Not now", id="cancel-sign-off")
    ]

    def __init__(self, preview: str, operator: str, key_text: str) -> None:
        super().__init__()
        self.preview = preview
        self.operator = operator
        self.key_text = key_text

    def compose(self) -> ComposeResult:
        with Vertical(id="sign-off-dialog", classes="dialog") as dialog:
            dialog.border_title = "Sign off the DR drill"
            yield Static(self.preview, id="sign-off-entry", markup=False)
            yield Static(self.key_text, id="sign-off-key", markup=False)
            yield Static("Performed by (your name as in allowed_signers):", markup=False)
            yield Input(value=self.operator, id="sign-off-name")
            yield Static("", id="sign-off-error", markup=False)
            yield Static(
                "Enter appends the signed entry · Esc: not now (palette: Sign off the drill)",
                classes="dialog-keys",
            )

    @on(Input.Submitted, "#sign-off-name")
    def _submitted(self, event: Input.Submitted) -> None:
        name = event.value.strip()
        if not name:
            self.query_one("#sign-off-error", Static).update("A drill entry needs a name.")
            return
        self.dismiss(name)

    def action_cancel(self) -> None:
        self.dismiss(None)


@dataclass(frozen=True)
class SignedOff:
    """How a sign-off went: `message` is the drill log's answer (or the error), `summary`
    adds the verdict; `appended` is False when nothing was written."""

    message: str
    summary: str
    appended: bool


class DrillSignOff:
    """Runbook section 4's sign-off for one drill run. The key is --sign-key, else
    drill.sign_key, else the agent's; `ask` first shows the entry and asks who signs (the
    restore drill), `sign` signs as a given name (the PITR drill, as its operator)."""

    def __init__(
        self,
        app: App[Any],
        run: drill.DrillRun,
        *,
        what: str,
        sign_key: Path | None,
        configured_key: Path | None,
        log_path: Path | None,
    ) -> None:
        self.app = app
        self.run = run
        self.what = what
        self.sign_key = sign_key
        self.configured_key = configured_key
        self.log_path = log_path

    def key(self) -> SigningKey | None:
        return signing.resolve_key(self.sign_key, self.configured_key)

    def ask(self, operator: str, done: Callable[[SignedOff | None], None]) -> None:
        """Show the entry and the key, ask who signs; `done` gets None on Esc."""
        key = self.key()
        key_text = (
            f"Signed with {key.describe()}; ssh-keygen may ask for its passphrase."
            if key
            else f"No signing key found: the entry is saved UNSIGNED. {NO_KEY_HINT}."
        )
        preview = entry_preview(drill.entry_fields(self.run, operator))

        def answered(name: str | None) -> None:
            done(None if name is None else self.sign(name, signer=name))

        self.app.push_screen(SignOffScreen(preview, operator, key_text), answered)

    def sign(self, performed_by: str, *, signer: str | None) -> SignedOff:
        """Append the entry, pass or fail, and say so in a toast."""
        try:
            result = sign_entry(
                self.app,
                self.run,
                what=self.what,
                performed_by=performed_by,
                signer=signer,
                key=self.key(),
                log_path=self.log_path,
            )
        except DrError as exc:
            self.app.notify(str(exc), title="Drill log", severity="error", timeout=20)
            return SignedOff(str(exc), str(exc), appended=False)
        verdict = drill.verdict(self.run)
        summary = f"Drill {verdict.result.upper()}: {result.message}"
        self.app.notify(
            summary,
            title="Drill log",
            severity="information" if result.signed and verdict.result == "pass" else "warning",
            timeout=20,
        )
        return SignedOff(result.message, summary, appended=True)
