"""What every fault case checks: one clear error line, no traceback, no partial file under a
final backup name, no process left behind."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from preskool_dr.core.storage import checksum
from tests.support.cli import HANG_GUARD

FINAL_NAME = re.compile(r"^preskool-backup-\d{8}_\d{6}\.sql\.gz$")


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The lines that report a failure: `preskool-dr: error:` and `[FAIL]` lines."""
    return [
        line
        for line in (result.stdout + "\n" + result.stderr).splitlines()
        if line.startswith(("preskool-dr: error:", "[FAIL]"))
    ]


def the_error(result: subprocess.CompletedProcess[str]) -> str:
    """The one line that says what went wrong (and what to do): exactly one such line."""
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    lines = error_lines(result)
    assert len(lines) == 1, "\n".join(lines) or result.stdout + result.stderr
    return lines[0]


def assert_says(line: str, *needles: str) -> None:
    for needle in needles:
        assert needle in line, f"{needle!r} not in: {line}"


def assert_no_partial_backups(folder: Path, *, known_bad: tuple[str, ...] = ()) -> None:
    """Every file under a final backup name is whole: its sidecar matches and gzip is intact.
    `known_bad` are files a case damaged on purpose (the tool must not have replaced them)."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if FINAL_NAME.match(path.name) and path.name not in known_bad:
            result = checksum.verify_with_sidecar(path)
            assert result.ok, result.describe()


def processes_with(text: str) -> list[int]:
    """Live processes whose command line contains `text` (zombies do not count)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text.encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def wait_for_size(path: Path, size: int) -> None:
    """Until `path` holds at least `size` bytes (a download's .part growing)."""
    deadline = time.monotonic() + HANG_GUARD
    while not (path.exists() and path.stat().st_size >= size):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never reached {size} bytes")
        time.sleep(0.05)


def check_line(lines: list[str], name: str) -> str:
    """`preskool-dr check`'s line for the check `name` (after the summary line)."""
    (line,) = [ln for ln in lines[1:] if re.match(rf"\w+ +{name}: ", ln)]
    return line


def restore_test_passed(state_dir: Path | None = None, hours_ago: float = 1.0) -> Path:
    """A restore test that passed `hours_ago` recorded in `state_dir` (default: the
    environment's PRESKOOL_DR_STATE_DIR), for `check` cases about something else: without
    one, `check` warns that no restore test was ever recorded."""
    from datetime import timedelta

    from preskool_dr.core.base.events import utcnow
    from preskool_dr.core.restore.test_record import record_restore_test_result

    return record_restore_test_result(
        state_dir or Path(os.environ["PRESKOOL_DR_STATE_DIR"]),
        ok=True,
        backup="preskool-backup-fixture.sql.gz",
        detail="recorded by the test",
        finished_at=utcnow() - timedelta(hours=hours_ago),
    )
