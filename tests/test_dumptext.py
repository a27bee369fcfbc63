"""DumpText: meta-commands outside COPY data found whatever the chunking, pg_dump's own
`\\restrict`/`\\unrestrict` pair accepted only in its places."""

from __future__ import annotations

import random

import pytest

from preskool_dr.core.storage.dumptext import DumpText

KEY = b"k3Y9abcDEF"
DUMP = (
    b"--\n-- PostgreSQL database dump\n--\n\n\\restrict " + KEY + b"\n\n"
    b"SET client_encoding = 'UTF8';\n"
    b"CREATE TABLE public.t (a text, b int);\n"
    b"COPY public.t (a, b) FROM stdin;\n"
    b"\\N\t1\n"  # NULL: a data row that starts with a backslash
    b"\\\\unrestrict x\t2\n"  # a value holding `\unrestrict`, escaped as COPY writes it
    b"\\.\n"
    b"CREATE FUNCTION f() RETURNS text AS $$ SELECT 'a\\b' $$ LANGUAGE sql;\n"
    b"\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict " + KEY + b"\n\n"
)


def scan(text: bytes, seed: int, *, strict: bool = True) -> tuple[DumpText, bytes]:
    rng = random.Random(seed)
    dump = DumpText(strict=strict, rewrite=True)
    out, pos = [], 0
    while pos < len(text):
        step = rng.choice([1, 2, 3, 5, 8, 13, 64, 4096])
        out.append(dump.feed(text[pos : pos + step]))
        pos += step
    out.append(dump.finish())
    return dump, b"".join(out)


def test_a_real_shaped_dump_passes_under_any_chunking() -> None:
    """No finding; the output has the same length and lines, without the restrict pair."""
    for seed in range(200):
        dump, out = scan(DUMP, seed)
        assert dump.found is None, (seed, dump.found)
        assert len(out) == len(DUMP) and out.count(b"\n") == DUMP.count(b"\n")
        assert b"\\restrict" not in out and b"\n\\unrestrict" not in out
        assert [(c.table, c.start_line, c.end_line) for c in dump.copies] == [("public.t", 9, 12)]


@pytest.mark.parametrize(
    ("text", "line", "command"),
    [
        (DUMP.replace(b"SET client", b"\\! id\nSET client"), 7, "\\!"),
        (
            DUMP.replace(b"SET client", b"SELECT 1; \\unrestrict `id`\nSET client"),
            7,
            "\\unrestrict",
        ),
        (DUMP.replace(b"\\restrict " + KEY, b"\\restrict other"), 19, "\\unrestrict"),
        (DUMP.replace(b"SET client", b"\\restrict " + KEY + b"\nSET client"), 7, "\\restrict"),
        (DUMP.replace(b"SET client", b"\\connect postgres\nSET client"), 7, "\\connect"),
        (DUMP.replace(b"\\.\n", b"\\.\n\\o /tmp/x\n"), 13, "\\o"),
        (DUMP + b"\\! id", 21, "\\!"),  # a last line without a newline runs too
        (  # COPY rows without a backslash are skipped whole: the next one is still seen
            DUMP.replace(b"\\N\t1\n", b"plain row\t1\nmore \\unrestrict `id`\t2\n"),
            11,
            "\\unrestrict",
        ),
    ],
    ids=[
        "shell",
        "mid_line_unrestrict",
        "other_key",
        "second_restrict",
        "connect",
        "after_copy",
        "no_newline",
        "in_copy_after_plain_rows",
    ],
)
def test_a_meta_command_is_found_with_its_line(text: bytes, line: int, command: str) -> None:
    """The first finding names its line and command, whatever the chunking, and nothing from
    that line on is handed out."""
    for seed in range(50):
        dump, out = scan(text, seed)
        assert dump.found is not None, seed
        assert (dump.found.line, dump.found.command) == (line, command), (seed, dump.found)
        assert out.count(b"\n") < line


def test_loose_mode_drops_the_pair_anywhere() -> None:
    """A parallel session's input: the pair may come in any order and place; dropped."""
    text = b"SELECT 1;\n\\unrestrict " + KEY + b"\nSELECT 2;\n\\restrict abc\n"
    dump, out = scan(text, 3, strict=False)
    assert dump.found is None and len(out) == len(text) and b"\\" not in out
