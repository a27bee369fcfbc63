"""psql's view of SQL text, as far as the parallel loader needs it: where statements end.

The parallel loader cuts a plain dump into jobs at pg_dump's TOC headers (`--` comment
lines). A cut is only safe where psql itself stands between two statements: not inside a
string, a dollar quote, a quoted identifier or a block comment, and not in the middle of a
statement. `SqlLexer` follows the text the way psql's lexer (psqlscan.l) does and says
whether it stands at such a boundary; whatever it cannot classify with certainty (psql
variables, a backslash command inside a statement, a COPY it was not told about, another
way of changing standard_conforming_strings) it records as `doubt`, so that the loader can
fall back to one serial stream instead of guessing.

Pure code (no PostgreSQL); it works on bytes and only ever on whole lines, as psql reads
them, so a token never straddles two `feed` calls. COPY data is never fed to it: the loader
skips that to the `\\.` line itself. `copy_statement` parses the `COPY ... FROM stdin;` header
pg_dump writes, exactly (quoted names may hold newlines, spaces, quotes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from preskool_dr.core.storage.sql_quotes import (
    BLOCK,
    DOLLAR,
    EQUOTE,
    IDENT,
    QUOTE,
    TOP,
    QuoteScanning,
)

# a word as psql reads one (bytes >= 0x80 count as letters, as in the server's lexer)
_WORD = re.compile(rb"[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*")
# Top level: runs of bytes that cannot start anything the lexer must look at.
_PLAIN = re.compile(rb"[^'\"$\-/\\;():\n A-Za-z_\x80-\xff\t\r\f\v]+")
_PLAIN_NO_WORDS = re.compile(rb"[^'\"$\-/\\;():\n \t\r\f\v]+")
_SPACE = re.compile(rb"[ \t\r\f\v\n]+")
_GAP = re.compile(rb"(?:[ \t\r\f\v\n]+|--[^\n]*)+")  # white space and -- comments
_WORD_GAP = re.compile(rb"([A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*)[ \t\r\f\v\n]*")
# inside a statement, once its first words are known: everything up to the next byte that
# may open a string, quote, comment or dollar quote, or end or nest the statement
_IN_STATEMENT = re.compile(rb"[^'\"$\-/\\;():]+")
_SCS = b"standard_conforming_strings"
_SCS_SET = re.compile(rb"SET standard_conforming_strings = (on|off);\n")
_ENCODING = b"client_encoding"
_ENCODING_SET = re.compile(rb"SET client_encoding = '([A-Za-z0-9_]+)';\n")
_UNSAFE = frozenset({b"SJIS", b"SHIFT_JIS_2004", b"BIG5", b"GBK", b"UHC", b"GB18030", b"JOHAB"})


@dataclass
class SqlLexer(QuoteScanning):
    """Feed it SQL text (`feed`, then `finish` at the end); `at_boundary` says whether psql
    would stand between two statements after what was fed."""

    # standard_conforming_strings as the text set it; None: not yet (the server's default
    # applies, which this lexer cannot know: a backslash in '...' is then a doubt)
    standard_strings: bool | None = None
    state: int = TOP
    line: int = 1  # the line the lexer is at (1-based, over all text fed)
    doubt: str | None = None  # the first thing it could not classify with certainty
    doubt_line: int = 0
    doubt_offset: int = 0  # ... and its byte offset in all the text fed
    lexed: int = 0  # bytes lexed so far
    meta: list[tuple[int, bytes]] = field(default_factory=list)  # psql commands (\x) seen
    _tag: bytes = b""  # the dollar quote's delimiter
    _depth: int = 0  # block comment nesting
    _parens: int = 0
    _begin: int = 0  # BEGIN ... END depth in CREATE FUNCTION (psql's heuristic)
    _in_statement: bool = False  # significant text since the last statement end
    _words: list[bytes] = field(default_factory=list)  # psql's first-identifier letters
    _word_count: int = 0
    _func: bool = False  # CREATE [OR REPLACE] FUNCTION|PROCEDURE, by psql's reckoning
    _first: bytes = b""  # the statement's first word, lower case
    _start: int = -1  # where the statement started in the current buffer (-1: earlier)
    _cont: int | None = None  # the string mode a quote continuation would resume
    _cont_newline: bool = False
    _carry: list[bytes] = field(default_factory=list)  # an unfinished line
    _settings_set: int = 0  # pg_dump SET statements of those settings in the current text
    _buf: bytes = b""  # the text being lexed, and the line it starts on
    _line0: int = 1

    @property
    def at_boundary(self) -> bool:
        """psql stands between statements: nothing open, no statement begun."""
        return not self._carry and self.state == TOP and not self._in_statement

    def feed(self, data: bytes) -> None:
        """Lex `data`; a trailing partial line waits for the rest of it."""
        if not data:
            return
        end = data.rfind(b"\n") + 1
        if end == 0:
            self._carry.append(data)
            return
        if self._carry:
            self._carry.append(data[:end])
            text = b"".join(self._carry)
            self._carry.clear()
        else:
            text = data[:end] if end < len(data) else data
        if end < len(data):
            self._carry.append(data[end:])
        self._lex(text)

    def finish(self) -> None:
        """The end of the text: a statement or quote left open is a doubt."""
        if self._carry:
            text = b"".join(self._carry)
            self._carry.clear()
            self._lex(text)
        if self.state != TOP:
            what = {QUOTE: "a string", EQUOTE: "a string", IDENT: "a quoted name"}
            what |= {DOLLAR: "a dollar-quoted string", BLOCK: "a /* comment */"}
            self._doubt(f"the text ends inside {what[self.state]}", len(self._buf))
        elif self._in_statement:
            self._doubt("the text ends inside a statement (no closing `;`)", len(self._buf))

    # ------------------------------------------------------------ the lexer proper

    def _doubt(self, reason: str, pos: int) -> None:
        """Note the first doubt, with the line of `pos` in the text being lexed."""
        if self.doubt is None:
            self.doubt = reason
            self.doubt_line = self._line0 + self._buf.count(b"\n", 0, pos)
            self.doubt_offset = self.lexed + pos

    def _lex(self, buf: bytes) -> None:
        """Lex whole lines (`buf` ends with a newline, except at the very end)."""
        self._buf, self._line0 = buf, self.line
        self._start = -1
        self._settings_set = 0
        pos, n = 0, len(buf)
        line0 = self.line
        while pos < n:
            state = self.state
            if state == TOP:
                pos = self._top(buf, pos, line0)
            elif state == QUOTE:
                pos = self._quote(buf, pos)
            elif state == EQUOTE:
                pos = self._equote(buf, pos)
            elif state == IDENT:
                pos = self._ident(buf, pos)
            elif state == DOLLAR:
                i = buf.find(self._tag, pos)
                if i < 0:
                    pos = n
                else:
                    pos = i + len(self._tag)
                    self.state = TOP
            else:
                pos = self._block(buf, pos)
        self._check_settings(buf)
        self.line = line0 + buf.count(b"\n")
        self.lexed += n

    def _top(self, buf: bytes, pos: int, line0: int) -> int:
        """One step at top level from `pos`; returns the next position."""
        if self._in_statement and self._cont is None and self._word_count >= 4 and not self._func:
            m = _IN_STATEMENT.match(buf, pos)
            if m is not None:
                return m.end()
        c = buf[pos]
        if self._cont is None and (c in b" \t\r\f\v\n" or buf.startswith(b"--", pos)):
            m = _GAP.match(buf, pos)
            assert m is not None
            return m.end()
        if c in b" \t\r\f\v\n":
            m = _SPACE.match(buf, pos)
            assert m is not None
            if self._cont is not None and b"\n" in m.group():
                self._cont_newline = True
            return m.end()
        if c == 0x2D and buf.startswith(b"--", pos):  # -- comment to the end of the line
            end = buf.find(b"\n", pos)
            return len(buf) if end < 0 else end
        if c == 0x2F and buf.startswith(b"/*", pos):
            self.state, self._depth, self._cont = BLOCK, 1, None
            return pos + 2
        # from here on the text is significant: a statement has begun
        if not self._in_statement:
            if c == 0x5C and (pos == 0 or buf[pos - 1] == 0x0A):
                return self._meta(buf, pos, line0)
            self._in_statement = True
            self._start = pos
            self._first = b""
            self._words.clear()
            self._word_count = 0
            self._func = False
            m = _WORD.match(buf, pos)
            if m is not None:
                self._first = m.group().lower()
        cont, self._cont = self._cont, None
        if c == 0x27:  # '
            return self._open_quote(buf, pos, cont)
        self._cont_newline = False
        if c == 0x22:  # "
            self.state = IDENT
            return pos + 1
        if c == 0x3B:  # ;
            if self._parens == 0 and self._begin == 0:
                self._end_statement(buf, pos)
            return pos + 1
        if c == 0x28:  # (
            self._parens += 1
            return pos + 1
        if c == 0x29:  # )
            self._parens = max(0, self._parens - 1)
            return pos + 1
        if c == 0x24:  # $
            return self._dollar(buf, pos)
        if c == 0x5C:  # a backslash outside quotes: a psql command inside a statement
            self._doubt("a psql backslash command inside a statement", pos)
            return pos + 1
        if c == 0x3A:  # : psql variables (:name, :'name', :"name"); :: is a cast
            if buf.startswith(b"::", pos):
                return pos + 2
            nxt = buf[pos + 1 : pos + 2]
            if nxt and (nxt in b"'\"_{" or nxt.isalpha() or nxt[0] >= 0x80):
                self._doubt("a psql variable (:name) outside quotes", pos)
            return pos + 1
        if self._word_count < 4 or self._func:
            m = _WORD_GAP.match(buf, pos)
            if m is not None:
                self._word(m.group(1))
                return m.end()
            m = _PLAIN.match(buf, pos)
        else:
            m = _PLAIN_NO_WORDS.match(buf, pos)
        return m.end() if m is not None else pos + 1

    def _meta(self, buf: bytes, pos: int, line0: int) -> int:
        """A psql command line (`\\restrict KEY`, `\\connect db`) between statements: psql
        takes the rest of the line as its arguments. More than one on a line is a doubt."""
        end = buf.find(b"\n", pos)
        end = len(buf) if end < 0 else end
        text = buf[pos:end]
        line = line0 + buf.count(b"\n", 0, pos)
        if b"\\" in text[1:]:
            self._doubt("a line with more than one psql backslash command", pos)
        if len(self.meta) < 100:  # what a caller may want to name; a flood is not kept
            self.meta.append((line, text))
        return end

    def _word(self, word: bytes) -> None:
        """psql's heuristic for CREATE FUNCTION ... BEGIN ATOMIC ... END bodies, whose
        semicolons do not end the statement (psqlscan.l, {identifier})."""
        low = word.lower()
        if self._word_count < 4:
            letter = (
                low[:1] if low in (b"create", b"function", b"procedure", b"or", b"replace") else b""
            )
            self._words.append(letter)
            w = self._words + [b""] * (4 - len(self._words))
            self._func = w[0] == b"c" and (
                w[1] in (b"f", b"p") or (w[1] == b"o" and w[2] == b"r" and w[3] in (b"f", b"p"))
            )
        self._word_count += 1
        if self._func and self._parens == 0:
            if low == b"begin" or (low == b"case" and self._begin >= 1):
                self._begin += 1
            elif low == b"end" and self._begin > 0:
                self._begin -= 1

    def _end_statement(self, buf: bytes, pos: int) -> None:
        if self._first == b"copy":  # its data would follow: the loader must handle it
            self._doubt("a COPY statement the loader did not recognise", pos)
        start = self._start
        if start >= 0 and buf.startswith(b"SET ", start) and pos == buf.find(b";", start):
            if m := _SCS_SET.match(buf, start):  # the rest lexes under the new setting
                self.standard_strings = m.group(1) == b"on"
                self._settings_set += 1
            elif m := _ENCODING_SET.match(buf, start):
                if m.group(1).upper() in _UNSAFE:
                    self._doubt("client_encoding is set to an encoding psql lexes otherwise", pos)
                self._settings_set += 1
        self._in_statement = False
        self._words.clear()
        self._word_count = 0
        self._func = False
        self._first = b""

    def _check_settings(self, buf: bytes) -> None:
        """standard_conforming_strings and client_encoding change how psql splits text: they
        may only be named in pg_dump's own top-level `SET standard_conforming_strings =
        on|off;` and `SET client_encoding = '...';` statements (not in a function body that
        would set them later, nor in any other statement)."""
        low = buf.lower()
        mentions = low.count(_SCS) + low.count(_ENCODING)
        if mentions != self._settings_set:
            pos = max(0, low.find(_SCS), low.find(_ENCODING))
            self._doubt("standard_conforming_strings or client_encoding named elsewhere", pos)


# ---------------------------------------------------------------- COPY headers

_PLAIN_NAME = re.compile(rb"[a-z_][a-z0-9_]*")  # what pg_dump leaves unquoted (fmtId)
NEED_MORE = -1


def _name(buf: bytes, pos: int) -> int:
    """The end of one name at `pos`: "quoted" (with "") or plain; NEED_MORE; or -2."""
    if pos >= len(buf):
        return NEED_MORE
    if buf[pos] == 0x22:
        i = pos + 1
        while True:
            j = buf.find(b'"', i)
            if j < 0 or j + 1 >= len(buf):
                return NEED_MORE
            if buf[j + 1] == 0x22:
                i = j + 2
                continue
            return j + 1
    m = _PLAIN_NAME.match(buf, pos)
    if m is None:
        return -2
    return NEED_MORE if m.end() >= len(buf) else m.end()


def _literal(buf: bytes, pos: int, text: bytes) -> int:
    if buf.startswith(text, pos):
        return pos + len(text)
    return NEED_MORE if text.startswith(buf[pos:]) else -2


def copy_statement(buf: bytes, pos: int) -> tuple[int, bytes] | int:
    """pg_dump's `COPY name (col, ...) FROM stdin;\\n` at `pos`: (index of its final
    newline, the qualified name as written), NEED_MORE when `buf` ends before it could
    end, or -2 when it is not exactly that shape."""
    p = _literal(buf, pos, b"COPY ")
    if p < 0:
        return p
    name_start = p
    p = _name(buf, p)
    if p < 0:
        return p
    if buf.startswith(b".", p):
        p = _name(buf, p + 1)
        if p < 0:
            return p
    name = buf[name_start:p]
    p = _literal(buf, p, b" ")
    if p < 0:
        return p
    if buf.startswith(b"(", p):
        p += 1
        while True:
            p = _name(buf, p)
            if p < 0:
                return p
            if buf.startswith(b", ", p):
                p += 2
                continue
            if p + 2 > len(buf) and b", ".startswith(buf[p:]):
                return NEED_MORE
            p = _literal(buf, p, b")")
            if p < 0:
                return p
            break
    p = _literal(buf, p, b" FROM stdin;\n")
    if p < 0:
        return p
    return p - 1, name
