"""A parser's handler that imports its command's module only when the command runs."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

Handler = Callable[[argparse.Namespace, Any], int]


def lazy(module: str, function: str = "run") -> Handler:
    """`preskool_dr.cli.<module>.<function>`, imported at the first call."""

    def handler(args: argparse.Namespace, ctx: Any) -> int:
        command = importlib.import_module(f"preskool_dr.cli.{module}")
        return int(getattr(command, function)(args, ctx))

    handler.__qualname__ = handler.__name__ = f"{module}.{function}"
    return handler
