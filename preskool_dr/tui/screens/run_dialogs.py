"""The typed confirmations of the checklist: step 5 (recreate), dropping the aside copy,
rolling back. Each says what will happen to which database before asking for its name."""

from __future__ import annotations

import humanize
from rich.text import Text

from preskool_dr.core.base.database import Snapshot
from preskool_dr.core.restore.journal import RunState
from preskool_dr.core.restore.steps.db_names import aside_name
from preskool_dr.tui.format import size
from preskool_dr.tui.screens.confirm_name import ConfirmNameScreen


def recreate_dialog(state: RunState, preview: Snapshot | str) -> ConfirmNameScreen:
    """Step 5: what it replaces (size, biggest tables), and where the old database goes."""
    target = state.target_db
    body = Text()
    body.append("This replaces database ")
    body.append(target, style="bold")
    body.append(f" on {state.db_host}:{state.db_port}.\n")
    if isinstance(preview, str):
        body.append(f"Its size could not be read: {preview}\n")
    elif not preview.exists:
        body.append("It does not exist yet: nothing will be destroyed.\n")
    else:
        rows = preview.row_estimates
        body.append(
            f"Size {size(preview.size_bytes)}; {len(rows)} tables, "
            f"about {humanize.intcomma(sum(rows.values()))} rows"
        )
        biggest = sorted(rows.items(), key=lambda item: (-item[1], item[0]))[:4]
        if biggest:
            body.append(": " + ", ".join(f"{name} ~{humanize.intcomma(n)}" for name, n in biggest))
            if len(rows) > len(biggest):
                body.append(f" and {len(rows) - len(biggest)} more")
        body.append(".\n")
    # a database that does not exist is neither moved aside nor dropped (an unknown one may be)
    existing = isinstance(preview, str) or preview.exists
    if existing and state.recreate_mode == "aside":
        aside = state.aside_db or aside_name(target, state.run_id)
        body.append("The old database is moved aside as ")
        body.append(aside, style="bold")
        body.append(" (kept until you drop it; a rollback can bring it back).\n")
    elif existing:
        body.append("The old database is DROPPED: only the backup can bring it back.\n", "bold")
    if state.backup is not None:
        body.append(f"Then step 6 restores {state.backup.name}.")
    return ConfirmNameScreen(
        "Step 5: Recreate database (destructive)",
        body,
        target,
        f"Type the database name {target} and press Enter:",
    )


def drop_aside_dialog(state: RunState, aside: str) -> ConfirmNameScreen:
    """After a passed health check: drop the database kept aside, or keep it for later."""
    body = (
        f"The health check passed. The database from before this run is still kept as "
        f"{aside} on {state.db_host}:{state.db_port}. Drop it now to free its space, or keep "
        f"it and drop it later with:\n  preskool-dr restore --drop-aside {state.run_id} "
        f"--confirm {aside}"
    )
    return ConfirmNameScreen(
        "Drop the aside copy?", body, aside, f"Type {aside} and press Enter to drop it:"
    )


def rollback_dialog(state: RunState) -> ConfirmNameScreen:
    """The restored target goes, the aside copy takes its name back."""
    body = (
        f"Roll back: {state.target_db} (this run's restore) is dropped and {state.aside_db} "
        f"is renamed back to {state.target_db}. The run ends as rolled-back."
    )
    return ConfirmNameScreen(
        "Roll back to the aside copy?",
        body,
        state.target_db,
        f"Type {state.target_db} and press Enter to roll back:",
    )
