"""Retention: old backups of a kind deleted after their days, locally and in S3."""

from __future__ import annotations

from datetime import datetime
from functools import partial

from preskool_dr.core.base.events import EventSink, ignore_events
from preskool_dr.core.base.settings import Config
from preskool_dr.core.storage import catalog
from preskool_dr.core.storage.repository import Repository


def apply_retention(
    config: Config,
    kind: str,
    *,
    keep: str,
    now: datetime,
    s3: bool,
    on_event: EventSink = ignore_events,
) -> int:
    """Delete backups of `kind` older than its retention, locally and (with `s3`) in S3.

    Only backups whose meta names `kind` go: one of unknown kind is never deleted, nor is
    `keep`. Local and S3 copies count separately (see Repository.retain); an S3 copy
    under Object Lock is kept (a notice says until when).
    """
    repo = Repository.from_config(config)
    listing = partial(catalog.list_backups, config)
    sides = ("local", "s3") if s3 else ("local",)
    return sum(
        repo.retain(kind, side, keep=keep, now=now, listing=listing, on_event=on_event)
        for side in sides
    )
