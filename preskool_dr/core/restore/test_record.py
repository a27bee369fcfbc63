"""The record of the last `restore-test`: `<state dir>/restore-test/last.json`, written by
the restore test (core/restore/restore_test.py) and read by `check` (core/monitor/check.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.events import utcnow
from preskool_dr.core.base.files import atomic_write
from preskool_dr.core.base.paths import ensure_private_dir, state_modes
from preskool_dr.core.storage.meta import iso_utc

RESTORE_TEST_FILE = Path("restore-test") / "last.json"


@dataclass(frozen=True)
class RestoreTestResult:
    """`<state dir>/restore-test/last.json`, written by `record_restore_test_result`."""

    ok: bool
    finished_at: datetime
    backup: str
    detail: str

    @classmethod
    def from_json(cls, data: Any) -> RestoreTestResult:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        ok, backup, detail = data.get("ok"), data.get("backup"), data.get("detail", "")
        if not isinstance(ok, bool) or not isinstance(backup, str) or not isinstance(detail, str):
            raise ValueError("needs ok (true/false), backup and detail (text)")
        finished = datetime.fromisoformat(str(data.get("finished_at")))
        if finished.tzinfo is None:
            finished = finished.replace(tzinfo=UTC)
        return cls(ok, finished, backup, detail)


def restore_test_path(state_dir: Path) -> Path:
    return state_dir / RESTORE_TEST_FILE


def read_restore_test_result(state_dir: Path) -> RestoreTestResult | None:
    """The last recorded restore test; None when none ever ran; DrError when unreadable."""
    path = restore_test_path(state_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return RestoreTestResult.from_json(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DrError(
            f"restore-test result {path} is unreadable ({exc}); "
            "run `preskool-dr restore-test` to record a new one"
        ) from None


def record_restore_test_result(
    state_dir: Path,
    *,
    ok: bool,
    backup: str,
    detail: str,
    finished_at: datetime | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Replace `<state dir>/restore-test/last.json` atomically (mode 0600, 0640 in a state
    folder shared with its group, so `check` run as the monitoring user reads it); returns
    its path.

    `extra` adds fields (durations, table counts...) without overriding the four above.
    """
    finished = finished_at or utcnow()
    record = {
        **(extra or {}),
        "ok": ok,
        "finished_at": iso_utc(finished),
        "backup": backup,
        "detail": detail,
    }
    path = restore_test_path(state_dir)
    dir_mode, file_mode = state_modes(state_dir)
    ensure_private_dir(path.parent, dir_mode)
    text = json.dumps(record, indent=2, sort_keys=True, default=str) + "\n"
    atomic_write(path, text.encode(), mode=file_mode)
    return path
