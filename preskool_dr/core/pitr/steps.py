"""The seven steps of a point-in-time recovery, in order: (step id, title).

The run (run.py) goes through them, its journal (journal.py) records each one's status, and
the CLI and the TUI list them."""

from __future__ import annotations

STEPS = (
    ("plan", "Choose the base backup; check the target is recoverable"),
    ("fetch", "Fetch and verify the base backup"),
    ("extract", "Extract it into the new data directory and check the manifest"),
    ("configure", "Write the recovery settings"),
    ("start", "Start the recovered server"),
    ("replay", "Replay archived WAL up to the target"),
    ("verify", "Verify the target was reached and the server promoted"),
)
