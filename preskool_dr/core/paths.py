"""Where preskool-dr keeps its state. One function, so tests and the demo can redirect it."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """`PRESKOOL_DR_STATE_DIR`, else `$XDG_STATE_HOME/preskool-dr`, else ~/.local/state/..."""
    explicit = os.environ.get("PRESKOOL_DR_STATE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "preskool-dr"


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (mode 0700) if needed: it holds journals with hostnames and operators."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path
