"""The checklist screen's keys, in the footer's order, and its palette-only actions."""

from __future__ import annotations

from textual.binding import Binding, BindingType

CHECKLIST_BINDINGS: list[BindingType] = [
    Binding(
        "r",
        "run_step",
        "Run step",
        tooltip="Run the selected step (a retry when it failed)",
        id="run-step",
    ),
    Binding("s", "skip_step", "Skip", tooltip="Skip the selected step (asks why)", id="skip-step"),
    Binding("R", "retry_step", "Retry", tooltip="Run a failed step again", id="retry-step"),
    # after a failed step with the old database kept aside (a failed health check, say):
    # the way back, beside R. The palette has it as "Roll back to the aside copy" otherwise.
    Binding(
        "u",
        "roll_back",
        "Roll back",
        tooltip="Put the old database kept aside back as the target (asks the target name)",
        id="roll-back",
    ),
    Binding("b", "show_backups", "Backups", tooltip="Browse and choose backups", id="backups"),
    Binding("question_mark", "help", "Help", tooltip="Explain the selected step", id="step-help"),
    # priority: Esc must close the help before a focused widget's own Esc acts behind it
    Binding("escape", "close_help", "Close help", show=False, priority=True, id="close-help"),
    # The App's quit, after closing the help if it is open.
    Binding("q", "quit", "Quit", tooltip="Quit (asks first while a step runs)", id="quit"),
    Binding(
        "p",
        "pitr",
        "Point-in-time recovery",
        tooltip="Recover the cluster as it was at a chosen time (base backup + archived "
        "WAL) into a new data directory",
        show=False,
        id="pitr",
    ),
    Binding("1", "panel('backups')", "Backups panel", show=False, id="panel-backups"),
    Binding("2", "panel('checksum')", "Checksum panel", show=False, id="panel-checksum"),
    Binding("3", "panel('restore')", "Restore panel", show=False, id="panel-restore"),
    Binding("4", "panel('log')", "Log panel", show=False, id="panel-log"),
    Binding("5", "panel('summary')", "Summary panel", show=False, id="panel-summary"),
    Binding(
        "t",
        "incident_time",
        "Incident time",
        tooltip="Change when the incident was declared (RTO start)",
        show=False,
        id="incident-time",
    ),
    Binding(
        "f5",
        "refresh_backups",
        "Refresh backups",
        tooltip="List local and S3 backups again",
        show=False,
        id="refresh-backups",
    ),
]
# Actions with no key, listed in the command palette: (title, help, action).
CHECKLIST_PALETTE_ONLY: tuple[tuple[str, str, str], ...] = (
    ("Filter backups", "Show only backups whose name, kind or place matches", "filter_backups"),
    (
        "Request a Glacier restore",
        "Ask S3 to restore the highlighted archived backup so it can be downloaded",
        "request_restore",
    ),
    (
        "Drop the aside copy",
        "After a passed health check: drop the old database kept aside (asks its name)",
        "drop_aside",
    ),
    (
        "Sign off the drill",
        "Drill: append the signed entry to the drill log now (pass or fail as it stands)",
        "sign_off",
    ),
    (
        "Roll back to the aside copy",
        "Put the old database back as the target (asks the target name); u after a failure",
        "rollback",
    ),
)

# Keys that change the run (and the PITR): off, and out of the footer, while a dialog is over
# the checklist or the help is open, so a stray key never starts a step behind it.
RUN_ACTIONS = frozenset(
    {
        "run_step",
        "skip_step",
        "retry_step",
        "incident_time",
        "drop_aside",
        "rollback",
        "roll_back",
        "pitr",
    }
)
