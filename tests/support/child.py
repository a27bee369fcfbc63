"""A CLI run in the background: its stdout lines are collected as they come, so a test can
wait for a given line (a step starting, a prompt) before it strikes with a signal."""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from collections.abc import Callable

from tests.support.cli import HANG_GUARD


def is_step(line: str, step_id: str, status: str) -> bool:
    """`<time>  step N/9  <id> <STATUS> <detail>`: the restore's line per transition."""
    parts = line.split()
    return len(parts) >= 5 and parts[1] == "step" and parts[3] == step_id and parts[4] == status


class Child:
    """A CLI run in the background whose stdout lines are collected as they come."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finish()
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
            errors="replace",
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[str], bool], what: str) -> str:
        deadline = time.monotonic() + HANG_GUARD
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.lines)
                if not self._reader.is_alive() or time.monotonic() > deadline:
                    raise AssertionError(f"never saw {what}; output:\n" + "\n".join(self.lines))
                self._changed.wait(0.5)

    def wait_for_step(self, step_id: str, status: str = "RUNNING") -> str:
        return self.wait_for(lambda line: is_step(line, step_id, status), f"{step_id} {status}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def finish(self) -> subprocess.CompletedProcess[str]:
        try:
            self.proc.wait(timeout=HANG_GUARD)
        finally:
            self.kill()
        self._reader.join(timeout=30)
        self._stderr.seek(0)
        err = self._stderr.read().decode("utf-8", "replace")
        self._stderr.close()
        return subprocess.CompletedProcess(
            self.proc.args, self.proc.returncode, "\n".join(self.lines) + "\n", err
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
