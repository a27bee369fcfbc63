"""A real terminal for tests: a private tmux server running one command in one pane, and
the process helpers that check what survived it (used by the demo and the TUI hang-up)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def wait_gone(pid: int, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} did not end"
        time.sleep(0.5)


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    return [p for child in children(pid) for p in (child, *descendants(child))]


class Tmux:
    """A private tmux server (its socket in the test's folder) running one command in a
    pane of `size` (100x30 unless told). `env`: the server's environment, so the command's."""

    def __init__(
        self,
        command: str,
        folder: Path,
        *,
        size: tuple[int, int] = (100, 30),
        env: dict[str, str] | None = None,
    ) -> None:
        self.tmux = shutil.which("tmux")
        assert self.tmux, "tmux is missing: `make test` installs it (scripts/ensure-postgres.sh)"
        self.socket = str(folder / "tmux.sock")
        self.env = env
        width, height = size
        self.run("new-session", "-d", "-x", str(width), "-y", str(height), "-s", "demo", command)
        self.pane_pid = int(self.run("list-panes", "-t", "demo", "-F", "#{pane_pid}").strip())

    def run(self, *args: str) -> str:
        return subprocess.run(
            [self.tmux or "tmux", "-S", self.socket, *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
            env=self.env,
        ).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-S", "-200", "-t", "demo")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "demo", *keys)

    def wait_for(self, *texts: str, seconds: float = 300) -> str:
        deadline = time.monotonic() + seconds
        while True:
            screen = self.screen()
            if all(t in screen for t in texts):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"waited for {texts}; the screen shows:\n{screen}")
            time.sleep(1)

    def kill(self, seconds: float = 120) -> None:
        """Close the terminal (SIGHUP) and wait until what ran in it has ended."""
        processes = [self.pane_pid, *descendants(self.pane_pid)]
        subprocess.run(
            [self.tmux or "tmux", "-S", self.socket, "kill-server"],
            capture_output=True,
            check=False,
            timeout=30,
            env=self.env,
        )
        for pid in processes:
            wait_gone(pid, seconds)
