"""Printing helpers shared by the commands: the seed's tagged lines and JSON."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

BANNER_RULE = "═" * 56


def tagged(tag: str, text: str, stream: TextIO | None = None) -> None:
    """`[OK]    text`: the seed's aligned `[BACKUP]`/`[OK]`/`[FAIL]` lines."""
    label = f"[{tag}]"
    label = label.ljust(8) if len(label) < 8 else label + " "
    print(f"{label}{text}", file=stream or sys.stdout, flush=True)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")
