"""core/base/procs.close_child: the one teardown of a psql fed through a pipe (the serial
stream and the parallel sessions use it). A running child is stopped before its input is
closed, its readers are joined, and no pipe is left open; a child that already ended is
only cleaned up. Real children, no PostgreSQL needed."""

from __future__ import annotations

import subprocess
import threading

from preskool_dr.core.base.procs import close_child, spawn


def _reader(proc: subprocess.Popen[bytes]) -> threading.Thread:
    assert proc.stdout is not None
    thread = threading.Thread(target=proc.stdout.read, daemon=True)
    thread.start()
    return thread


def test_a_running_child_is_stopped_and_its_pipes_closed() -> None:
    proc = spawn(["sleep", "60"], stdin=subprocess.PIPE)
    reader = _reader(proc)
    joined: list[bool] = []

    def join() -> None:
        reader.join(timeout=5)
        joined.append(not reader.is_alive())

    close_child(proc, join)
    assert proc.poll() is not None and proc.returncode < 0  # stopped by a signal
    assert joined == [True]
    assert proc.stdin is not None and proc.stdin.closed
    assert proc.stdout is not None and proc.stdout.closed
    assert proc.stderr is not None and proc.stderr.closed


def test_a_child_that_ended_is_only_cleaned_up() -> None:
    proc = spawn(["true"], stdin=subprocess.PIPE)
    reader = _reader(proc)
    proc.wait(timeout=10)
    close_child(proc, lambda: reader.join(timeout=5))
    assert proc.returncode == 0
    assert proc.stdin is not None and proc.stdin.closed
    assert proc.stdout is not None and proc.stdout.closed
