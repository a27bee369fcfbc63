"""Telling someone that WAL archiving fails: a failed `wal-push` sends `wal_push_failed` to
the URLs in PRESKOOL_DR_NOTIFY_URLS (the server's environment: wal-push reads no runbook).

PostgreSQL retries a failed archive_command every few seconds for as long as it fails, so
the first failure notifies and the next ones stay quiet for REPEAT_SECONDS, marked by a file
in the archive folder (else in the temp folder, when the archive itself is what fails); the
next successful push clears the mark, so a new failure is news again."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from preskool_dr.core.backup.wal.settings import WalSettings

MARK = ".push-failure-notified"
REPEAT_SECONDS = 3600.0  # a failure still going on is notified again after an hour


def _marks(settings: WalSettings) -> tuple[Path, Path]:
    """Where the mark may be: in the archive folder, or (per archive) in the temp folder."""
    key = hashlib.sha256(str(settings.archive_dir).encode()).hexdigest()[:12]
    spare = Path(tempfile.gettempdir()) / f"preskool-dr-{os.geteuid()}-{key}{MARK}"
    return settings.archive_dir / MARK, spare


def _fresh_mark(mark: Path, now: float) -> bool:
    """A mark set less than REPEAT_SECONDS ago, by this user: the temp folder is everyone's,
    and a file planted at the mark's (predictable) name must not silence the alert."""
    try:
        info = mark.lstat()
    except OSError:
        return False
    ours = stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and info.st_nlink == 1
    return ours and now - info.st_mtime < REPEAT_SECONDS


def clear_push_failure(settings: WalSettings) -> None:
    """After a successful push: the next failure notifies at once."""
    for mark in _marks(settings):
        with contextlib.suppress(OSError):
            mark.unlink()


def notify_push_failure(
    settings: WalSettings, segment: str, error: str, env: Mapping[str, str] | None = None
) -> bool:
    """Send `wal_push_failed` unless one was sent less than REPEAT_SECONDS ago; True when
    one was sent (delivered or not: delivery problems are never the push's)."""
    env = os.environ if env is None else env
    urls = tuple(u.strip() for u in env.get("PRESKOOL_DR_NOTIFY_URLS", "").split(",") if u.strip())
    if not urls:
        return False
    now = time.time()
    for mark in _marks(settings):
        if _fresh_mark(mark, now):
            return False
    from preskool_dr.core.base.notify import Notification, Notifier  # only when it fails

    Notifier(urls).send(
        Notification(
            "wal_push_failed",
            f"segment {segment}",
            f"archive_command failed for {segment}: {error} - PostgreSQL keeps the segment "
            f"and retries; point-in-time recovery stops at the last archived one",
            details={"segment": segment, "archive": settings.where},
        )
    )
    for mark in _marks(settings):
        try:
            fd = os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            os.close(fd)
            os.utime(mark, (now, now))
            break
        except OSError:
            continue
    return True
