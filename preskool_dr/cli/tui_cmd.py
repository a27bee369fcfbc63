"""`preskool-dr tui` (also what `preskool-dr` alone runs): the full-screen restore checklist."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from preskool_dr.core.base.settings import Config
from preskool_dr.core.restore.engine import default_operator

if TYPE_CHECKING:
    from preskool_dr.tui.app import DrApp


def run(args: argparse.Namespace, ctx: Any) -> int:
    app = run_app(
        ctx.config,
        drill=args.drill,
        target_db=args.target_db,
        backup=args.backup,
        operator=args.performed_by or default_operator(),
        sign_key=args.sign_key,
        drill_log=args.drill_log,
        server_python=args.server_python or sys.executable,
    )
    if not app.hung_up:  # after a hang-up there is no terminal to print to
        for line in exit_summary(app):
            print(line)
    return app.return_code or 0


def exit_summary(app: DrApp) -> list[str]:
    """Two or three lines for the shell: the outcome, where it is written down, and what
    comes next (the resume command after an interrupted run)."""
    from preskool_dr.tui.run_summary import RunFiles, exit_lines

    state = app.engine.state if app.engine else None
    config = app.config
    files = RunFiles.of(config.state_dir, state.run_id) if state else None
    return exit_lines(state, config.thresholds, files, app.target_db_option)


def run_app(config: Config, **options: Any) -> DrApp:
    """Run the TUI to its end and hand back the app (its return code, its stop signal)."""
    # Imported here so the headless commands never pay for (or depend on) Textual.
    from preskool_dr.tui.app import DrApp

    app = DrApp(config, **options)
    app.run()
    return app
