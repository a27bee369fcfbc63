"""pg_dump's plain text followed chunk by chunk: where COPY data starts and ends, and the
psql meta-commands outside it, which no backup may carry.

psql runs a line that starts with a backslash as its own command (`\\! sh -c ...`,
`\\o FILE`, `\\copy ... to FILE`, `\\connect otherdb`, `\\i FILE`, `\\set`) on the host that
restores, before the server sees anything. pg_dump writes only these of its own:
`\\restrict KEY` right after its opening banner and `\\unrestrict KEY` after its closing one
(PostgreSQL 17.6/16.10/15.14 and later), and `\\connect DB` with `--create`. preskool-dr
never dumps with `--create` and loads into the database the operator confirmed, so every
`\\connect` is refused: a dump made with `--create` must be made again without it.
Inside COPY data a line may start with a backslash (`\\N` is NULL), so COPY blocks are
followed: `COPY ... FROM stdin;` up to the `\\.` line.

The scan works on whole chunks with `bytes.find` (never line by line in Python): verify
runs it beside the MD5 and the decompression at the speed of both. It sees what psql sees
at a line start. A backslash command in the middle of a line (`SELECT 1; \\! sh`), or a
COPY header hidden inside a multi-line comment, needs a full SQL lexer to find: the loaders
therefore also run psql under a `\\restrict` key of their own that no backup can know, so
psql itself refuses any meta-command that gets past this scan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from preskool_dr.core.base.errors import VerificationError
from preskool_dr.core.storage.sql_lexer import NEED_MORE, copy_statement

# pg_dump's plain output opens with this banner; `\restrict KEY` follows after a blank line.
DUMP_HEAD = b"--\n-- PostgreSQL database dump\n--\n"
# pg_dump's plain format opens with that banner and closes with the "complete" one, which it
# writes only after the last object; since PostgreSQL 17.6/16.10/15.14 a `\unrestrict KEY`
# line may follow it.
DUMP_COMPLETE = b"\n-- PostgreSQL database dump complete\n"
RESTRICT_AT = len(DUMP_HEAD) + 1  # text offset of pg_dump's `\restrict` line
MAX_LINE = 65536  # bytes a COPY header or a backslash line may span across chunks
_RESTRICT = re.compile(rb"\\(restrict|unrestrict) ([A-Za-z0-9]+)[ \t\r]*")
_COMMAND = re.compile(rb"\\(?:[A-Za-z]+|[^A-Za-z\s]?)")
_UNRESTRICT = b"\\unrestrict"
_CONTEXT = 64  # bytes kept from one chunk to the next: split needles, backslash runs
CONNECT_COMMANDS = frozenset({"\\c", "\\connect"})


@dataclass(frozen=True)
class Finding:
    """The first line a backup may not carry."""

    line: int  # 0 when the scan did not count lines (verify counts them afterwards)
    command: str  # the meta-command as written, e.g. `\!`, printable
    problem: str  # what is wrong, e.g. "psql meta-command \! is not allowed in a backup"
    offset: int = 0  # in the text: where its line (or the command) starts

    def describe(self) -> str:
        return f"line {self.line}: {self.problem}"


class MetaCommandError(VerificationError):
    """A loader met a meta-command before writing it to psql."""

    def __init__(self, message: str, finding: Finding) -> None:
        super().__init__(message)
        self.finding = finding


@dataclass
class CopyBlock:
    table: str
    header: str
    start_line: int
    end_line: int | None = None


def _printable(raw: bytes, limit: int = 40) -> str:
    """A command for a message: no control characters reach the operator's terminal."""
    text = raw[:limit].decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


class DumpText:
    """Follows plain pg_dump text fed in chunks of any size.

    `strict` (verify, the serial loader: the text is the whole file): pg_dump's own
    `\\restrict KEY` is accepted only at its place right after the opening banner, and
    `\\unrestrict` only once, with the same key (verify's shape check wants it after the
    closing banner).
    Not strict (one psql session of the parallel loader, which reads parts of the file):
    a `\\restrict`/`\\unrestrict` line is dropped wherever it is (dropping one never runs
    anything). Either way any other backslash line outside COPY data is a finding.

    `rewrite`: `feed` returns the text that may go to psql now: those lines blanked to a
    comment of the same length (line numbers and offsets do not move) and an unfinished
    backslash line held back until it is whole. Without it `feed` returns b"" (verify).
    """

    def __init__(
        self, *, strict: bool = True, rewrite: bool = False, count_lines: bool = True
    ) -> None:
        self.strict = strict
        self.rewrite = rewrite
        # Counting newlines is a third of the scan; verify only needs a line number for a
        # finding, which it counts afterwards from the finding's offset (an error path).
        self.count_lines = count_lines
        self.copies: list[CopyBlock] = []
        self.newlines = 0  # in all text fed so far
        self.found: Finding | None = None
        self._open: CopyBlock | None = None
        self._carry = b"\n"  # a virtual newline before the first byte: line 1 starts a line
        self._buf_start = -1  # text offset of the carry's first byte
        self._emitted = 0  # text offset up to which `feed` has returned text
        self._key: bytes | None = None  # the dump's own `\restrict` key
        self._closed = False  # its `\unrestrict` was seen
        self._searched = 0  # text offset from which `\unrestrict` is still to be looked for

    @property
    def current(self) -> str | None:
        return self._open.table if self._open else None

    @property
    def finished(self) -> list[str]:
        return [c.table for c in self.copies if c.end_line is not None]

    def copy_at(self, line: int) -> CopyBlock | None:
        for copy in reversed(self.copies):
            if copy.start_line <= line and (copy.end_line is None or line <= copy.end_line):
                return copy
        return None

    def feed(self, chunk: bytes) -> bytes:
        """Scan `chunk`. After a finding nothing more is scanned or returned."""
        if self.found is not None:
            return b""
        if self._open is not None and b"\\" not in self._carry and chunk.find(b"\\") < 0:
            return self._plain_copy_data(chunk)
        carried = len(self._carry)
        buf = self._carry + chunk
        start = self._buf_start
        base = 0
        if self.count_lines:
            base = self.newlines - self._carry.count(b"\n")  # newlines before buf[0]
            self.newlines += chunk.count(b"\n")
        blanks: list[tuple[int, int]] = []  # buf ranges to turn into comments
        pos = 0
        hold = -1  # buf index of an unfinished candidate line, scanned again next time
        hold_meta = False  # that line starts with a backslash: it is not handed out yet
        next_copy = next_meta = -2  # cached search results (-2: not searched yet)
        while True:
            if self._open is not None:
                i = buf.find(b"\n\\.\n", pos)
                if i < 0:
                    break
                self._open.end_line = self._line(buf, base, i + 1)
                self._open = None
                pos = i + 3  # the newline ending `\.` may start the next header
                continue
            if 0 <= next_copy < pos or next_copy == -2:
                next_copy = buf.find(b"\nCOPY ", pos)
            if 0 <= next_meta < pos or next_meta == -2:
                next_meta = buf.find(b"\n\\", pos)
            if next_copy < 0 and next_meta < 0:
                break
            is_meta = next_meta >= 0 and (next_copy < 0 or next_meta < next_copy)
            i = next_meta if is_meta else next_copy
            j = buf.find(b"\n", i + 1)
            if is_meta and j < 0 and len(buf) - i < MAX_LINE:
                hold, hold_meta = i, True  # a line split across chunks: finish it next time
                break
            line_no = self._line(buf, base, i + 1)
            if is_meta:
                text = buf[i + 1 : j] if j >= 0 else buf[i + 1 :]
                if not self._meta(text, line_no, start + i + 1):
                    break
                blanks.append((i + 1, i + 1 + len(text)))
                if j < 0:  # cannot happen for an accepted line: it is short
                    break
                pos = j
                continue
            # parsed exactly, as the parallel loader does: a quoted name may hold newlines
            copy = copy_statement(buf, i + 1)
            if copy == NEED_MORE and len(buf) - i < MAX_LINE:
                hold = i  # a header split across chunks: finish it next time
                break
            if isinstance(copy, tuple):
                end, name = copy
                self._open = CopyBlock(_text(name), _text(buf[i + 1 : end]), line_no)
                self.copies.append(self._open)
                pos = end  # an empty table's `\.` follows at once
            else:
                pos = i + 1
        if self.found is None:
            self._unrestrict_anywhere(buf, start, base, hold, blanks)
        if self.found is not None:
            return b""
        keep = hold if hold >= 0 else max(pos, len(buf) - _CONTEXT)
        self._carry = buf[keep:]
        self._buf_start = start + keep
        if not self.rewrite:
            return b""
        # a held backslash line goes out whole with the next chunk (the newline before it
        # goes now); a held COPY line may go now (no line starts after it in this chunk)
        end = max(self._emitted, start + (hold + 1 if hold_meta else len(buf)))
        lo, hi = self._emitted - start, end - start
        self._emitted = end
        if not blanks and lo == carried and hi == len(buf):
            return chunk  # the common case: the chunk as it came, not a copy of it
        if not blanks:
            return buf[lo:hi]
        out = bytearray(buf[lo:hi])
        for a, b in blanks:
            out[a - lo : b - lo] = b"--" + b" " * (b - a - 2)
        return bytes(out)

    def _plain_copy_data(self, chunk: bytes) -> bytes:
        """`feed` for a chunk of COPY data with no backslash in it or in the carry: the end
        of the block (`\\.`) and `\\unrestrict` both need one, so there is nothing to find.
        One memchr instead of the searches below: most COPY data of most dumps is like this
        (verify's cost; docs/PERFORMANCE.md)."""
        if self.count_lines:
            self.newlines += chunk.count(b"\n")
        buf_end = self._buf_start + len(self._carry) + len(chunk)
        self._carry = (self._carry + chunk[-_CONTEXT:])[-_CONTEXT:]
        self._buf_start = buf_end - len(self._carry)
        self._searched = buf_end - len(_UNRESTRICT) + 1
        if not self.rewrite:
            return b""
        self._emitted = buf_end
        return chunk

    def finish(self) -> bytes:
        """The end of the text: a held last line (psql runs one without a newline too) is
        judged. (A `\\restrict` left open harms nothing; the loaders blank both lines.)"""
        out = b""
        if self.found is None and len(self._carry) > 1 and self._carry[1:2] == b"\\":
            out = self.feed(b"\n")
            if self.rewrite and out.endswith(b"\n"):
                out = out[:-1]
        return b"" if self.found is not None else out

    def _unrestrict_anywhere(
        self, buf: bytes, start: int, base: int, hold: int, blanks: list[tuple[int, int]]
    ) -> None:
        """psql expands the argument of `\\unrestrict` even in restricted mode (a backquoted
        argument runs a shell command; psql before 18.6/17.11/16.15/15.19), and it is the one
        command restricted mode lets through: no `\\unrestrict` but pg_dump's own may reach
        psql, wherever it stands in a line, in COPY data or not. In COPY data a backslash is
        written doubled, so only one after an odd run of backslashes is a command."""
        limit = hold + 1 if hold >= 0 else len(buf)
        own = {a for a, _ in blanks}
        k = max(self._searched - start, 0)
        while (k := buf.find(_UNRESTRICT, k, limit)) >= 0:
            run = 1
            while run <= k and buf[k - run] == 0x5C:  # backslash
                run += 1
            if k not in own and (run % 2 == 1 or run > k):
                self._find(
                    self._line(buf, base, k),
                    _UNRESTRICT,
                    "psql meta-command \\unrestrict is not allowed in a backup (pg_dump writes "
                    "it only as its last line)",
                    start + k,
                )
                return
            k += 1
        # a needle that starts in the last bytes may end in the next chunk (not after a hold:
        # a needle holds no newline, and buf[hold] is one)
        self._searched = start + (limit if hold >= 0 else max(limit - len(_UNRESTRICT) + 1, 0))

    def _meta(self, text: bytes, line: int, at: int) -> bool:
        """Judge the backslash line `text` (line number `line`, at text offset `at`): True
        when it is pg_dump's own `\\restrict`/`\\unrestrict` (to be dropped)."""
        own = _RESTRICT.fullmatch(text)
        match = _COMMAND.match(text)
        command = match.group(0) if match else b"\\"
        if own is not None and not self.strict:
            return True
        if own is not None and own[1] == b"restrict":
            if self._key is None and at == RESTRICT_AT:
                self._key = own[2]
                return True
            self._find(
                line,
                command,
                "\\restrict is allowed only once, where pg_dump writes it (right after its "
                "opening banner)",
                at,
            )
            return False
        if own is not None:
            if self._key is not None and own[2] == self._key and not self._closed:
                self._closed = True
                return True
            self._find(line, command, "\\unrestrict does not close pg_dump's own \\restrict", at)
            return False
        name = _printable(command)
        problem = f"psql meta-command {name} is not allowed in a backup"
        if name in CONNECT_COMMANDS:
            problem += (
                " (a backup loads into the database you confirm; a dump made with pg_dump "
                "--create switches databases: make it again without --create)"
            )
        self._find(line, command, problem, at)
        return False

    def _line(self, buf: bytes, base: int, end: int) -> int:
        """The line number of the text at buf[end] (0 when lines are not counted)."""
        return base + buf.count(b"\n", 0, end) + 1 if self.count_lines else 0

    def _find(self, line: int, command: bytes, problem: str, at: int) -> None:
        self.found = Finding(line, _printable(command), problem, at)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def dump_shape_error(head: bytes, tail: bytes) -> str | None:
    """Why a text whose first and last bytes are `head` and `tail` is not whole pg_dump plain
    output, or None when it is."""
    if not head.startswith(DUMP_HEAD):
        return (
            "the text does not start with pg_dump's `-- PostgreSQL database dump` banner: "
            "this is not a pg_dump backup"
        )
    at = tail.rfind(DUMP_COMPLETE)
    after = tail[at + len(DUMP_COMPLETE) :].splitlines() if at >= 0 else None
    if after is None or not all(
        line.strip() in (b"", b"--") or line.startswith(b"\\unrestrict ") for line in after
    ):
        return (
            "the text does not end with pg_dump's `-- PostgreSQL database dump complete` "
            "line: the dump was cut short (pg_dump stopped early, or the text was cut and "
            "compressed again)"
        )
    return None


def meta_command_error(found: Finding) -> str:
    """What verify and step 4 say about a backup that holds a psql meta-command."""
    return (
        f"{found.describe()}: psql would run it on the host that restores this backup; "
        "do not restore it: restore another backup and find out who wrote this one"
    )
