"""Text from outside (a drill log's fields, a principal name) made safe to put on a terminal.

A value holding `\\x1b[2J` (clear the screen), `\\x1b]0;...\\x07` (set the window title) or
a bare carriage return could repaint what the operator reads: fake a VALID line, hide a
warning. Every such character is shown as a visible escape instead, so the output says
exactly what the file holds. One function for every front end's output of untrusted text.
"""

from __future__ import annotations

import re

# C0 controls (including tab, newline, ESC), DEL, C1 controls (0x80-0x9f: 0x9b is a
# one-byte CSI to many terminals), Unicode line/paragraph separators, and the bidirectional
# overrides and isolates that reorder what is displayed.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_control(value: object) -> str:
    """`str(value)` with every control character written as `\\xNN` (or `\\uNNNN`)."""
    return _UNSAFE.sub(_escape, str(value))
