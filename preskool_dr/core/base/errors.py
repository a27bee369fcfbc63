"""Errors the operator sees, each carrying the exit code the contract documents."""

from __future__ import annotations


class DrError(Exception):
    """An expected failure: the message says what happened and what to do next."""

    exit_code = 1

    def __init__(
        self, message: str, *, exit_code: int | None = None, field: str | None = None
    ) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
        # Which input was wrong (a request's field name, e.g. "port"), so a form can point
        # at it without reading the message.
        self.field = field


class UsageError(DrError):
    """Bad arguments or a thing that does not exist (exit 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """runbook.yaml or the environment is wrong; the message starts with file:line."""


class NotFoundError(UsageError):
    """A backup, object or run that does not exist (exit 2)."""


class ArchivedError(DrError):
    """An S3 object is in GLACIER/DEEP_ARCHIVE and has not been restored yet (exit 3)."""

    exit_code = 3


class VerificationError(DrError):
    """A backup failed its checksum or gzip integrity check (exit 1)."""


class LockedError(DrError):
    """Another run holds the lock on the same target."""


class Cancelled(DrError):
    """The operator (or a signal) interrupted the work; the journal stays resumable."""

    exit_code = 130


class NoSpaceError(DrError):
    """Not enough free space for a download or a restore, found before anything was written
    or taken down (exit 1); the message names the space needed and free."""
