"""SqlLexer's scanners for what psql reads as one token across many bytes: strings ('...',
E'...', U&'...', B'...'), "quoted names", dollar quotes and nested block comments.

A mixin of SqlLexer (sql_lexer.py): each method is one step from `pos` inside (or into) such
a token, sets the lexer's `state` when it opens or closes one, and returns the next position.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

# psql's character classes (bytes >= 0x80 count as letters, as in the server's lexer)
_IDENT_CONT = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_$") | (
    frozenset(range(0x80, 0x100))
)
_DIGITS = frozenset(b"0123456789")
_DOLLAR_TAG = re.compile(rb"\$(?:[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)?\$")
_E_BODY = re.compile(rb"[^'\\]+")  # E'...' between escapes and quotes
_COMMENT_MARK = re.compile(rb"/\*|\*/")

TOP, QUOTE, EQUOTE, IDENT, DOLLAR, BLOCK = range(6)
_STANDARD, _ESCAPE = QUOTE, EQUOTE  # how a string treats backslashes


class QuoteScanning:
    """The string, quoted-name, dollar-quote and comment states of SqlLexer."""

    # SqlLexer's fields these steps read and set (declared there, as dataclass fields)
    standard_strings: bool | None
    state: int
    _tag: bytes
    _depth: int
    _cont: int | None
    _cont_newline: bool

    if TYPE_CHECKING:

        def _doubt(self, reason: str, pos: int) -> None: ...

    def _open_quote(self, buf: bytes, pos: int, cont: int | None) -> int:
        """A quote at top level: which kind of string it opens (psql: xq, xe, xus, xb, xh)."""
        if cont is not None and self._cont_newline:  # 'a'\n'b' is one string: same rules
            self.state = cont
            self._cont_newline = False
            return pos + 1
        self._cont_newline = False
        start = pos
        while start > 0 and buf[start - 1] in _IDENT_CONT:
            start -= 1
        prefix = buf[start:pos]
        if buf[pos - 2 : pos] in (b"U&", b"u&") and (pos < 3 or buf[pos - 3] not in _IDENT_CONT):
            self.state = _STANDARD  # U&'...': quotes double, backslashes are escapes only later
        elif prefix in (b"E", b"e"):
            self.state = _ESCAPE
        elif prefix in (b"B", b"b", b"X", b"x"):
            self.state = _STANDARD  # bit strings: no backslash escapes in any mode
        elif prefix[:1] and prefix[0] in _DIGITS:
            self._doubt("a quote right after a number", pos)
            self.state = self._plain_mode()
        else:  # N'...', or an identifier then a string: the session's rules
            self.state = self._plain_mode()
        return pos + 1

    def _plain_mode(self) -> int:
        return _ESCAPE if self.standard_strings is False else _STANDARD

    def _quote(self, buf: bytes, pos: int) -> int:
        """Inside '...' where backslashes are plain characters; '' is a quote."""
        while True:
            i = buf.find(b"'", pos)
            if i < 0:
                self._unknown_backslash(buf, pos, len(buf))
                return len(buf)
            self._unknown_backslash(buf, pos, i)
            if buf.startswith(b"''", i):
                pos = i + 2
                continue
            self.state, self._cont = TOP, QUOTE
            return i + 1

    def _unknown_backslash(self, buf: bytes, start: int, end: int) -> None:
        """Before the text sets standard_conforming_strings, a backslash in '...' depends
        on the server's setting, which this lexer cannot know."""
        if self.standard_strings is None and buf.find(b"\\", start, end) >= 0:
            self._doubt("a backslash in a string before standard_conforming_strings is set", start)

    def _equote(self, buf: bytes, pos: int) -> int:
        """Inside E'...': a backslash escapes the next byte; '' is a quote."""
        n = len(buf)
        while pos < n:
            m = _E_BODY.match(buf, pos)
            if m is not None:
                pos = m.end()
                continue
            if buf[pos] == 0x5C:
                pos += 2
                continue
            if buf.startswith(b"''", pos):
                pos += 2
                continue
            self.state, self._cont = TOP, EQUOTE
            return pos + 1
        return n

    def _ident(self, buf: bytes, pos: int) -> int:
        """Inside "...": "" is a quote."""
        while True:
            i = buf.find(b'"', pos)
            if i < 0:
                return len(buf)
            if buf.startswith(b'""', i):
                pos = i + 2
                continue
            self.state = TOP
            return i + 1

    def _block(self, buf: bytes, pos: int) -> int:
        """Inside /* ... */, which nests."""
        while True:
            m = _COMMENT_MARK.search(buf, pos)
            if m is None:
                return len(buf)
            pos = m.end()
            if m.group() == b"/*":
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 0:
                    self.state = TOP
                    return pos

    def _dollar(self, buf: bytes, pos: int) -> int:
        start = pos
        while start > 0 and buf[start - 1] in _IDENT_CONT:
            start -= 1
        if start < pos:  # part of a word: abc$ is an identifier; 1$ is not clear
            if buf[start] in _DIGITS:
                self._doubt("a $ right after a number", pos)
            return pos + 1
        m = _DOLLAR_TAG.match(buf, pos)
        if m is None:  # $1 (a parameter) or a lone $
            return pos + 1
        self._tag = m.group()
        self.state = DOLLAR
        return m.end()
