"""The parallel loader's SQL lexer (core/storage/sql_lexer.py) on text alone: it stands at a
statement boundary exactly where psql would, never inside a string, dollar quote, quoted
name or comment, and says when it cannot be sure; `copy_statement` parses pg_dump's COPY
headers exactly, odd names included."""

from __future__ import annotations

import pytest

from preskool_dr.core.storage.sql_lexer import NEED_MORE, SqlLexer, copy_statement

PREAMBLE = b"SET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\n"
TOC = b"--\n-- Name: x; Type: TABLE DATA; Schema: public; Owner: -\n--\n"


def lexed(*pieces: bytes, preamble: bytes = PREAMBLE) -> SqlLexer:
    lexer = SqlLexer()
    lexer.feed(preamble)
    for piece in pieces:
        lexer.feed(piece)
    return lexer


def boundaries(text: bytes, *, preamble: bytes = PREAMBLE) -> list[int]:
    """The line numbers (1-based, in `text`) at whose start the lexer stands at a boundary,
    feeding one line at a time."""
    lexer = lexed(preamble=preamble)
    found = []
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        if lexer.at_boundary:
            found.append(number)
        lexer.feed(line)
    return found


def test_plain_statements_and_comments() -> None:
    """Between statements, after line and block comments, the lexer is at a boundary."""
    text = b"CREATE TABLE t (a int);\n-- a comment; with a semicolon\n/* block; */\nSELECT 1;\n"
    assert boundaries(text) == [1, 2, 3, 4]
    lexer = lexed(text)
    assert lexer.at_boundary and lexer.doubt is None


def test_string_with_doubled_quotes_and_toc_lines() -> None:
    """A multi-line string holding pg_dump TOC headers and `''` is one token: no boundary
    inside it, one after it."""
    text = (
        b"COMMENT ON TABLE t IS 'it''s line1\n"
        + TOC
        + b"DROP TABLE public.victim;\n';\nSELECT 2;\n"
    )
    assert boundaries(text) == [1, 7]
    assert lexed(text).doubt is None


def test_escape_strings() -> None:
    """E'...' with \\' and \\\\: the quote after a backslash does not close it; a quote
    after an escaped backslash does."""
    text = b"SELECT E'a\\'\n" + TOC + b"b\\\\';\nSELECT e'x\\\\';\nSELECT 3;\n"
    assert boundaries(text) == [1, 6, 7]


def test_standard_conforming_strings_off() -> None:
    """With the dump's `SET standard_conforming_strings = off;` a backslash escapes in
    plain '...' strings too, until it is set on again."""
    pre = b"SET standard_conforming_strings = off;\n"
    text = b"SELECT 'a\\';\n--\nSELECT 1';\nSET standard_conforming_strings = on;\nSELECT 'b\\';\n"
    assert boundaries(text, preamble=pre) == [1, 4, 5]
    assert lexed(text, preamble=pre).at_boundary


def test_unknown_standard_conforming_strings_is_a_doubt() -> None:
    """Before the text sets standard_conforming_strings, a backslash in '...' cannot be
    classified; setting it another way than pg_dump's SET is a doubt too."""
    assert lexed(b"SELECT 'a\\';\n", preamble=b"").doubt is not None
    assert lexed(b"SELECT 'a';\n", preamble=b"").doubt is None
    other = lexed(b"SELECT set_config('standard_conforming_strings', 'off', false);\n")
    assert other.doubt is not None and "standard_conforming_strings" in other.doubt
    assert lexed(b"SET client_encoding = 'SJIS';\n").doubt is not None
    # pg_dump's own line, but inside a body that would run later: not applied, so a doubt
    body = b"DO $$ BEGIN\nSET standard_conforming_strings = off;\nEND $$;\n"
    assert lexed(body).doubt is not None


def test_quote_continuation_keeps_escape_rules() -> None:
    """E'a'<newline>'b\\'c' is one E-string to psql (SQL's string continuation)."""
    text = b"SELECT E'a'\n'b\\';\n';\nSELECT 1;\n"
    assert boundaries(text) == [1, 4]
    # without a newline between them they are two strings: the second is a plain one
    assert boundaries(b"SELECT E'a' 'b\\';\nSELECT 1;\n") == [1, 2]


def test_dollar_quotes() -> None:
    """$$...$$ and $tag$...$tag$ with $ signs, other tags and quotes inside."""
    text = (
        b"CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $fn$\n"
        b"SELECT '$$' || $1 || $x$ inner $x$ || 'it''s';\n" + TOC + b"$fn$;\n"
        b"SELECT $$a;\nb$$, a$b, $1;\n"
        b"SELECT 1;\n"
    )
    assert boundaries(text) == [1, 7, 9]
    assert lexed(text).doubt is None


def test_quoted_identifiers() -> None:
    """ "..." with "" and newlines is one name; a quote inside it opens no string."""
    text = b'CREATE TABLE "we""ird\n' + TOC + b"name ' x\" (a int);\nSELECT 1;\n"
    assert boundaries(text) == [1, 6]


def test_nested_block_comments() -> None:
    """/* /* */ still a comment */: the first */ does not end it."""
    text = b"/* outer /* inner */\n" + TOC + b"still ' comment */\nSELECT 1;\n"
    assert boundaries(text) == [1, 6]
    assert lexed(text).at_boundary


def test_statement_spanning_lines_and_parentheses() -> None:
    """No boundary before a statement's `;`, nor at a `;` inside parentheses."""
    text = b"CREATE TABLE t (\n  a int\n)\n;\nSELECT (1;\n2);\nSELECT 1;\n"
    assert boundaries(text) == [1, 5, 7]


def test_begin_atomic_function_body() -> None:
    """The `;` inside CREATE FUNCTION ... BEGIN ATOMIC ... END do not end it (psql's own
    heuristic); a CASE ... END inside counts too."""
    text = (
        b"CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql\n"
        b"BEGIN ATOMIC\n SELECT CASE WHEN true THEN 1 END;\n"
        b" SELECT 2;\nEND;\nSELECT 3;\n"
    )
    assert boundaries(text) == [1, 6]


def test_psql_commands_and_variables() -> None:
    """A backslash line between statements is psql's (recorded); inside a statement it is a
    doubt, as is a psql variable; a :: cast and an array slice are not."""
    lexer = lexed(b"\\restrict abc\nSELECT 1;\n")
    assert lexer.meta == [(3, b"\\restrict abc")] and lexer.doubt is None
    assert lexed(b"SELECT 1 \\gexec\n").doubt is not None
    assert lexed(b"SELECT :'DBNAME';\n").doubt is not None
    assert lexed(b"SELECT :{?DBNAME};\n").doubt is not None
    assert lexed(b"SELECT 'a'::text, (ARRAY[1,2])[1:2];\n").doubt is None
    assert lexed(b"SELECT 1; \\! ls\n").doubt is not None


def test_copy_statement_not_recognised_is_a_doubt() -> None:
    """A COPY the loader did not take (its data would follow) is a doubt, in any case."""
    lexer = lexed(b"copy public.t (a) from stdin;\n")
    assert lexer.doubt == "a COPY statement the loader did not recognise"
    assert lexer.doubt_line == 3


def test_end_inside_a_string_is_a_doubt() -> None:
    """Text ending inside a string or statement: not a boundary, and a doubt at `finish`."""
    lexer = lexed(b"SELECT 'abc\n")
    lexer.finish()
    assert lexer.doubt is not None and "string" in lexer.doubt
    lexer = lexed(b"SELECT 1\n")
    lexer.finish()
    assert lexer.doubt is not None


def test_split_feeds() -> None:
    """Feeding byte by byte gives the same answer as feeding at once."""
    text = b"SELECT E'\\'', $a$x$a$, \"q\"\"\", 'it''s' /* c */;\n"
    lexer = lexed()
    for k in range(len(text)):
        lexer.feed(text[k : k + 1])
    assert lexer.at_boundary and lexer.doubt is None


@pytest.mark.parametrize(
    ("header", "name"),
    [
        (b"COPY public.t (a, b) FROM stdin;\n", b"public.t"),
        (b"COPY public.t  FROM stdin;\n", b"public.t"),
        (b'COPY public."evil\nname" (line) FROM stdin;\n', b'public."evil\nname"'),
        (b'COPY "S p"."a "" b" ("x, y", "c)") FROM stdin;\n', b'"S p"."a "" b"'),
        ('COPY public."tä\u00dfle" (a) FROM stdin;\n'.encode(), 'public."tä\u00dfle"'.encode()),
        (b"COPY t (a) FROM stdin;\n", b"t"),
    ],
)
def test_copy_headers(header: bytes, name: bytes) -> None:
    """pg_dump's COPY headers parse exactly, with the name as written; every prefix of one
    asks for more."""
    assert copy_statement(header + b"rows\n", 0) == (len(header) - 1, name)
    for k in range(5, len(header)):
        assert copy_statement(header[:k], 0) == NEED_MORE


@pytest.mark.parametrize(
    "line",
    [
        b"COPY public.t (a) FROM stdin; DROP TABLE x;\n",
        b"COPY public.t (a) FROM '/etc/passwd';\n",
        b"COPY public.T (a) FROM stdin;\n",
        b"COPY (SELECT 1) TO stdout;\n",
        b"COPY public.t (a) FROM stdin WITH (FORMAT csv);\n",
    ],
)
def test_copy_headers_not_pg_dumps(line: bytes) -> None:
    """Anything else is not a pg_dump COPY header."""
    assert copy_statement(line, 0) == -2
