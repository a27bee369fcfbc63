"""pg_dump's plain text, fed in decompressed pieces, -> the parallel load's work: pre-data
text for the schema session, the data entries that are not COPY blocks for the data session,
COPY parts (copy_parts.py) and post-data jobs (post_data.py), all handed to a `ScanSink`.

Cuts are made only where psql itself stands between two statements: core/storage/sql_lexer.py
follows the SQL between COPY blocks as psql does, so TOC-shaped lines inside a string are
the string's. Text the lexer cannot classify with certainty raises `Unsure`; pre-data is
held back (up to PRE_DATA_HOLD bytes) until the lexer has seen it all, so that a doubt
there finds nothing loaded yet and the whole file can go serially.

Pure code: no PostgreSQL, no processes, no threads; the sink does the input and output.
"""

from __future__ import annotations

import itertools
import re
from typing import Protocol

from preskool_dr.core.base.errors import DrError, VerificationError
from preskool_dr.core.restore.loaders.parallel.copy_parts import CopyParts, PartSink
from preskool_dr.core.restore.loaders.parallel.jobs import Job
from preskool_dr.core.restore.loaders.parallel.pieces import BlockEnd, Piece
from preskool_dr.core.restore.loaders.parallel.post_data import Entry, PostJobs
from preskool_dr.core.restore.loaders.parallel.toc import (
    DATA_TYPES,
    SETTING,
    TRAILER,
    AmbiguousHeader,
    Roots,
    entry_keys,
    name_key,
    preamble_doubt,
    setting_key,
)
from preskool_dr.core.restore.loaders.parallel.toc import header as toc_header
from preskool_dr.core.storage.sql_lexer import NEED_MORE, SqlLexer, copy_statement

MAX_CANDIDATE = 65536  # bytes a header may span across pieces
MAX_COPY_HEADER = 1 << 20  # bytes a COPY header may span (1,600 quoted column names fit)
PRE_DATA_HOLD = 64 << 20  # pre-data bytes held back until the lexer has seen them all


class Unsure(Exception):
    """The scanner met text it cannot split with certainty (sql_lexer's doubt). `loaded`:
    some of the file already went to the server (else the whole load can go serially)."""

    def __init__(self, reason: str, line: int, *, loaded: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line
        self.loaded = loaded


class ScanSink(PartSink, Protocol):
    """Where the scanner's output goes (the load); its calls may raise to stop the scan."""

    def pre_data(self, data: bytes) -> None:
        """Pre-data text, in file order, for the schema session."""

    def start_sessions(self, preamble: bytes) -> None:
        """The text before the first entry is known: the sessions may connect."""

    def end_pre_data(self, *, data_follows: bool) -> Roots:
        """All pre-data was given: returns once it is loaded, with the restored schema's
        table trees when data follows (else nothing)."""

    def serial_data(self, data: bytes) -> None:
        """Data entries that are not parallel COPY blocks, in file order, for one session."""

    def add_post(self, job: Job) -> None:
        """A post-data job, in file order."""

    def data_scanned_to_end(self) -> None:
        """The data section is over: nothing more goes to `serial`."""

    def line_at(self, offset: int) -> int:
        """The line of decompressed byte `offset` (only for a message)."""


class Scanner:
    """Routes the file's text, piece by piece: `feed` each piece, then `finish`."""

    def __init__(self, sink: ScanSink, name: str, split_bytes: int) -> None:
        self.sink = sink
        self.name = name
        self.section = "pre"  # pre | data | post
        self.target = "pre"  # where text goes: pre | serial | copy | post
        self.buf = b""  # bytes not routed yet; buf[0] starts a line unless mid_line
        self.buf_pos = 0  # decompressed offset of buf[0]
        self.mid_line = False
        self.sql_bytes = 0
        seqs = itertools.count(1)
        self.parts = CopyParts(sink, split_bytes, lambda: next(seqs))
        self.post = PostJobs(sink.add_post, lambda: next(seqs))
        self.roots: Roots = {}
        self.block_end = BlockEnd()
        self.serial_copy = False  # inside a COPY block that goes to the current target
        self.expect_copy = False  # a TABLE DATA entry whose COPY line has not come yet
        self.entry: Entry | None = None  # the post-data entry being read
        self.tail = bytearray()  # the end of the current entry's text: settings live there
        self.settings: dict[bytes, bytes] = {}
        self.preamble: bytearray | None = bytearray()  # text before the first entry
        # psql's view of the SQL between COPY blocks: a cut is made only where it stands
        # between statements, never inside a string, dollar quote, quoted name or comment
        self.lexer = SqlLexer()
        # pre-data waits here until the lexer has seen it all (or PRE_DATA_HOLD bytes):
        # when in doubt, nothing has been loaded and the whole file can go serially
        self.pre_held: list[bytes] | None = []
        self.pre_held_bytes = 0
        self.unlexed = 0  # bytes of COPY headers and rows, which the lexer never sees

    def feed(self, piece: Piece) -> None:
        """The next decompressed piece (with the zlib state before it: `piece.before`)."""
        self.parts.remember(piece, self.buf_pos + len(self.buf), keep_from=self.buf_pos)
        self.buf += piece.data
        self._route(final=False)
        self.parts.scan_offset = piece.end
        self.sql_bytes += len(piece.data)

    def finish(self) -> None:
        """The file ended: route what is left and end the sections still open."""
        if self.sql_bytes == 0:
            raise VerificationError(
                f"{self.name} is empty: pick another backup (`preskool-dr list`)"
            )
        self._route(final=True)
        in_block = self.parts.in_block
        if not in_block and not self.serial_copy:
            self.lexer.finish()
            self._check_lexer()
        if in_block or self.serial_copy:
            table = self.parts.label if in_block else "a table"
            raise DrError(
                f"{self.name} ends inside the data of {table}: the backup is incomplete; "
                "pick another backup (`preskool-dr list`)"
            )
        self._finish_entry()
        self.post.flush()
        if self.section == "pre":  # a schema-only dump: all of it went to one session
            self._end_pre_data(data_follows=False)
        elif self.section == "data":
            self.sink.data_scanned_to_end()

    # ------------------------------------------------------------ routing bytes

    def _route(self, *, final: bool) -> None:
        buf, pos, n = self.buf, 0, len(self.buf)
        next_dash = next_copy = -2  # cached search results (-2: not searched yet)
        while pos < n:
            if self.parts.in_block or self.serial_copy:
                end = self.block_end.find(buf, pos)
                if end < 0:
                    if self.serial_copy:
                        self._emit(buf[pos:])
                    else:
                        self.parts.skip_rows(buf, self.buf_pos, pos, n, None)
                    self.unlexed += n - pos
                    pos = n
                    break
                if self.serial_copy:
                    self._emit(buf[pos:end])
                    self.serial_copy = False
                else:
                    self.parts.skip_rows(buf, self.buf_pos, pos, end, end)
                self.unlexed += end - pos
                pos = end
                self.mid_line = False
                continue
            # Text: find the next line that may be an entry header or a COPY line.
            if not self.mid_line and buf.startswith((b"--\n", b"COPY "), pos):
                i = pos
            else:
                if next_dash != -1 and next_dash < pos:
                    next_dash = buf.find(b"\n--\n", pos)
                if next_copy != -1 and next_copy < pos:
                    next_copy = buf.find(b"\nCOPY ", pos)
                found = [k + 1 for k in (next_dash, next_copy) if k >= 0]
                i = min(found) if found else -1
            if i < 0:
                cut = buf.rfind(b"\n", pos) + 1
                if cut <= pos and (final or n - pos > MAX_CANDIDATE):
                    cut = n  # a very long line (or the last one): route it whole
                if cut > pos:
                    self._sql(buf[pos:cut])
                    self.mid_line = buf[cut - 1 : cut] != b"\n"
                    pos = cut
                break
            if i > pos:
                self._sql(buf[pos:i])
                pos = i
            self.mid_line = False
            if not self.lexer.at_boundary:
                # inside a string, a dollar quote, a quoted name, a comment or a statement:
                # psql reads this line as part of it, and so does the load
                self._sql(buf[i : i + 1])
                pos = i + 1
                self.mid_line = True
                continue
            if buf.startswith(b"--\n", i):
                j = buf.find(b"\n", i + 3)
                k = buf.find(b"\n", j + 1) if j >= 0 else -1
                if k < 0 and not final and n - i < MAX_CANDIDATE:
                    break  # maybe a header: wait for the rest of it
                line = buf[i + 3 : j] if j >= 0 else b""
                try:
                    header = toc_header(line) if k >= 0 else None
                except AmbiguousHeader as exc:
                    raise Unsure(
                        str(exc),
                        self.sink.line_at(self.buf_pos + i + 3),
                        loaded=self.pre_held is None,
                    ) from None
                if k >= 0 and buf[j + 1 : k] == b"--" and (header or line == TRAILER):
                    self.lexer.feed(buf[i : k + 1])
                    self._check_lexer()
                    self._header(header, buf[i : k + 1])
                    pos = k + 1
                else:
                    self._sql(buf[i : i + 3])
                    pos = i + 3
                continue
            header_end = copy_statement(buf, i)
            if header_end == NEED_MORE and not final and n - i < MAX_COPY_HEADER:
                break  # maybe a COPY header: wait for its end
            if isinstance(header_end, tuple):  # pg_dump's `COPY name (cols) FROM stdin;`
                j, table = header_end
                self.unlexed += j - i
                self._copy(table, i, j)
                pos = j  # the terminator search starts at the COPY line's newline
            else:  # SQL that starts with COPY: a COPY the lexer does not know is a doubt
                j = buf.find(b"\n", i)
                end = j + 1 if j >= 0 else n
                self._sql(buf[i:end])
                pos = end
        self.buf_pos += pos
        self.buf = buf[pos:]

    def _sql(self, data: bytes) -> None:
        """SQL text (not COPY rows): the lexer sees it before any session does."""
        self.lexer.feed(data)
        self._check_lexer()
        self._emit(data)

    def _check_lexer(self) -> None:
        lexer = self.lexer
        if lexer.doubt is not None:
            line = lexer.doubt_line
            if self.unlexed:  # the lexer counted only the lines it saw
                line = self.sink.line_at(lexer.doubt_offset + self.unlexed)
            raise Unsure(lexer.doubt, line, loaded=self.pre_held is None)

    def _release_pre_data(self) -> None:
        """The pre-data held so far goes to the schema session: from now on the load has
        begun, and a doubt can only stop it."""
        if self.pre_held is None:
            return
        self._check_lexer()
        held, self.pre_held = self.pre_held, None
        for data in held:
            self.sink.pre_data(data)

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        self.tail += data
        del self.tail[:-4096]
        if self.target == "pre":
            if self.preamble is not None:
                self.preamble += data
            if self.pre_held is None:
                self.sink.pre_data(data)
            else:
                self.pre_held.append(data)
                self.pre_held_bytes += len(data)
                if self.pre_held_bytes > PRE_DATA_HOLD:
                    self._release_pre_data()
        elif self.target == "serial":
            self.sink.serial_data(data)
        elif self.target == "post":
            assert self.entry is not None
            self.entry.text.append(data)
        elif any(line.strip() and not SETTING.fullmatch(line) for line in data.split(b"\n")):
            # "copy": only blank lines and session settings may surround a parallel COPY
            if not self.expect_copy:
                raise DrError(
                    f"{self.name}: unexpected SQL after the data of {self.parts.last_label()}: "
                    "this is not pg_dump's plain output as `preskool-dr backup` writes it; "
                    "the load was stopped: check where this backup came from and restore "
                    "another one"
                )
            self.target = "serial"  # e.g. `ALTER TABLE ... DISABLE TRIGGER ALL` first
            self.expect_copy = False
            self.sink.serial_data(data)

    # ------------------------------------------------------------ entries

    def _header(self, header: re.Match[bytes] | None, raw: bytes) -> None:
        kind = header["type"].decode() if header else "END"
        name = header["name"].decode("utf-8", "replace") if header else "end of dump"
        self._finish_entry()
        if self.preamble is not None:
            preamble, self.preamble = bytes(self.preamble), None
            line = preamble_doubt(preamble)
            if line is not None:
                raise Unsure(
                    "SQL other than pg_dump's session settings before its first entry",
                    line,
                    loaded=self.pre_held is None,
                )
            self.sink.start_sessions(preamble)
        if kind in DATA_TYPES and self.section == "pre":
            self._end_pre_data(data_follows=True)
            self.section = "data"
        elif kind not in DATA_TYPES and self.section == "data":
            self.sink.data_scanned_to_end()
            self.section = "post"
        if self.section == "pre":
            self.target = "pre"
            self._emit(raw)
        elif self.section == "data" and kind == "TABLE DATA":
            self.target = "copy"
            self.expect_copy = True
        elif self.section == "data":
            self.target = "serial"
            self.sink.serial_data(self._settings())
            self._emit(raw)
        else:
            self.target = "post"
            self.entry = Entry(kind, name, self._settings())
            self._emit(raw)

    def _settings(self) -> bytes:
        return b"".join(line + b"\n" for line in self.settings.values())

    def _finish_entry(self) -> None:
        """Session settings at the end of an entry belong to the entries after it."""
        lines = bytes(self.tail).split(b"\n")
        self.tail.clear()
        found: list[bytes] = []
        for line in reversed(lines):
            if not line.strip():
                continue
            match = SETTING.fullmatch(line)
            if match is None:
                break
            found.append(line)
            self.settings.setdefault(setting_key(match), b"")  # keep first-seen order
        for line in reversed(found):
            match = SETTING.fullmatch(line)
            assert match is not None
            self.settings[setting_key(match)] = line
        entry, self.entry = self.entry, None
        self.expect_copy = False
        if entry is None:
            return
        text = b"".join(entry.text)
        if found:
            text = text[: text.rfind(found[-1])]
        self.post.add(entry, text, entry_keys(entry.type, text, self.roots))

    def _copy(self, table: bytes, i: int, j: int) -> None:
        if self.target == "copy" and self.expect_copy:
            self.expect_copy = False
            key = self.roots.get(name_key(table))
            header = self.buf[i : j + 1]
            self.parts.open(table, header, self.buf_pos + j + 1, key, self._settings())
        else:
            self._emit(self.buf[i:j])
            self.serial_copy = True

    def _end_pre_data(self, *, data_follows: bool) -> None:
        self._release_pre_data()
        roots = self.sink.end_pre_data(data_follows=data_follows)
        if data_follows:
            self.roots = roots
