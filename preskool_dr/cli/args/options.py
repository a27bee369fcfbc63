"""Options several commands share."""

from __future__ import annotations

import argparse

LOG_FORMATS = ("text", "json")
LOG_FORMAT_HELP = (
    "text (default): the lines shown here, on stdout; json: one JSON object per line on "
    "stderr for each event (keys: time, event, step, level, message; progress events add "
    "phase, done, total, unit, rate), for journald and log shippers"
)


def add_log_format_option(parser: argparse.ArgumentParser) -> None:
    """`--log-format text|json` for the long-running commands (main.py applies it)."""
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="text", help=LOG_FORMAT_HELP)
