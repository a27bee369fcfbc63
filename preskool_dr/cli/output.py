"""Printing helpers shared by the commands: the seed's tagged lines and JSON."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

import humanize

from preskool_dr.core.events import Event, Progress

BANNER_RULE = "═" * 56


def tagged(tag: str, text: str, stream: TextIO | None = None) -> None:
    """`[OK]    text`: the seed's aligned `[BACKUP]`/`[OK]`/`[FAIL]` lines."""
    label = f"[{tag}]"
    label = label.ljust(8) if len(label) < 8 else label + " "
    print(f"{label}{text}", file=stream or sys.stdout, flush=True)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


class TtyProgress:
    """One self-overwriting stderr line per transfer or check; only used on a terminal."""

    def __init__(self) -> None:
        self._open = False

    def __call__(self, event: Event) -> None:
        if not isinstance(event, Progress):
            return
        done = humanize.naturalsize(event.done, binary=True)
        text = f"{event.phase}: {done}"
        if event.total:
            text += f" of {humanize.naturalsize(event.total, binary=True)}"
            text += f" ({int(100 * (event.fraction or 0))}%)"  # 100% only when done
        if event.rate > 0:
            text += f", {humanize.naturalsize(event.rate, binary=True)}/s"
        finished = event.total is not None and event.done >= event.total
        if finished and not self._open:
            return  # the closing event of a line already ended
        sys.stderr.write(f"\r{text}\x1b[K" + ("\n" if finished else ""))
        sys.stderr.flush()
        self._open = not finished
