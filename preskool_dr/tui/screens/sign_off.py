"""The drill's sign-off: the entry about to be appended to the drill log, and who signs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from preskool_dr.core.drill import log as drill_log
from preskool_dr.core.drill import record as drill
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
) -> drill_log.AppendResult:
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
