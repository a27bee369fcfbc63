"""The databases a run makes beside its target, named after the run."""

from __future__ import annotations

from preskool_dr.core.base import database


def aside_name(target: str, run_id: str) -> str:
    """`<target>_before_<run id>`: where step 5 keeps the old database (aside mode)."""
    return _run_db_name(target, run_id, "before")


def loading_name(target: str, run_id: str) -> str:
    """`<target>_loading_<run id>`: where step 6 loads, under a name no application uses."""
    return _run_db_name(target, run_id, "loading")


def _run_db_name(target: str, run_id: str, tag: str) -> str:
    """Trimmed to PostgreSQL's 63-byte identifier limit, the run's part kept whole."""
    suffix = f"_{tag}_" + run_id.replace("-", "_")
    room = database.MAX_IDENTIFIER_BYTES - len(suffix.encode())
    head = target.encode()[:room].decode("utf-8", "ignore")
    return head + suffix
