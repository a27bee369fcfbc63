"""What pg_dump's plain output looks like, as far as the scanner relies on it: the TOC
entry headers, the session settings between entries, and the tables a post-data entry
names. Pure code: bytes in, answers out."""

from __future__ import annotations

import re

DATA_TYPES = frozenset({"TABLE DATA", "SEQUENCE SET", "BLOBS", "LARGE OBJECTS"})
ATTACHED_TYPES = frozenset({"COMMENT", "SECURITY LABEL"})  # belong to the entry before
GROUPS = {"CONSTRAINT": "build", "INDEX": "build", "TRIGGER": "trigger", "FK CONSTRAINT": "fk"}

# pg_dump writes `-- Name: N; Type: T; Schema: S; Owner: O[; Tablespace: X]` with the names
# as they are: any of them may hold `; ` (a schema "a; b" is legal). The type is one of
# pg_dump's upper-case words, so the line reads one way unless a name itself holds
# `; Type: `: `header` reads it from both ends and refuses a line the two readings disagree on.
HEADER = re.compile(
    rb"-- (?:Data for )?Name: (?P<name>.*); Type: (?P<type>[A-Z][A-Z ]*); Schema: .*; Owner: .*"
)
_HEADER_FIRST = re.compile(
    rb"-- (?:Data for )?Name: (?P<name>.*?); Type: (?P<type>[A-Z][A-Z ]*?); Schema: .*; Owner: .*"
)


class AmbiguousHeader(ValueError):
    """An entry header whose names hide another `; Type: `: its type cannot be told."""


def header(line: bytes) -> re.Match[bytes] | None:
    """The entry header on `line` (without its newline), or None: not a header.
    AmbiguousHeader when the line reads as two entries of different types."""
    last = HEADER.fullmatch(line)
    if last is None:
        return None
    first = _HEADER_FIRST.fullmatch(line)
    if first is not None and first["type"] != last["type"]:
        raise AmbiguousHeader(
            "an entry header whose object names hide another `; Type: ` "
            f"(reads as {first['type'].decode()} and as {last['type'].decode()})"
        )
    return last


TRAILER = b"-- PostgreSQL database dump complete"
# one statement each: a value holds no `;` outside quotes (settings are replayed per job)
_VALUE = rb"""(?:[^;'"\\]|'(?:[^'\\]|'')*'|"(?:[^"]|"")*")*"""
SETTING = re.compile(
    rb"SET (?P<set>SESSION AUTHORIZATION|ROLE|[a-z_.]+)(?: = | )" + _VALUE + rb";"
    rb"|RESET (?P<reset>SESSION AUTHORIZATION|ROLE);"
    rb"|SELECT pg_catalog\.set_config\('(?P<fn>search_path)', '(?:[^'\\]|'')*', false\);"
)
# what pg_dump writes before its first entry: settings every session replays
_PREAMBLE_LINE = re.compile(
    rb"SET [a-z_]+ = (?:[A-Za-z0-9_]+|'[A-Za-z0-9_ -]*');"
    rb"|SELECT pg_catalog\.set_config\('search_path', '', false\);"
)
_IDENT = rb'(?:"(?:[^"]|"")*"|[^\s."(),;]+)'
_QUALIFIED = rb"(" + _IDENT + rb"(?:\." + _IDENT + rb")?)"
_TABLES = {
    "INDEX": re.compile(rb"CREATE (?:UNIQUE )?INDEX " + _IDENT + rb" ON (?:ONLY )?" + _QUALIFIED),
    "CONSTRAINT": re.compile(rb"ALTER TABLE (?:ONLY )?" + _QUALIFIED),
    "FK CONSTRAINT": re.compile(rb"ALTER TABLE (?:ONLY )?" + _QUALIFIED),
    "TRIGGER": re.compile(
        rb"CREATE (?:CONSTRAINT )?TRIGGER " + _IDENT + rb"\s.*?\sON " + _QUALIFIED, re.S
    ),
}
_ALSO = {
    "FK CONSTRAINT": re.compile(rb"\sREFERENCES " + _QUALIFIED),
    "TRIGGER": re.compile(rb"\sFROM " + _QUALIFIED),
}
_NAME_PART = re.compile(r'"((?:[^"]|"")*)"|([^".]+)')

Roots = dict[tuple[str, ...], int]  # (schema, relation) -> the id of its table tree


def setting_key(match: re.Match[bytes]) -> bytes:
    """What a SETTING sets: a later one of the same key replaces it."""
    return match["set"] or match["reset"] or match["fn"]


def name_key(raw: bytes) -> tuple[str, ...]:
    """A qualified name as pg_dump quotes it -> its parts unquoted, as the catalog holds them:
    public."Odd Name" -> ("public", "Odd Name"), doubled quotes undone."""
    text = raw.decode("utf-8", "replace")
    return tuple(q.replace('""', '"') if q else plain for q, plain in _NAME_PART.findall(text))


def preamble_doubt(text: bytes) -> int | None:
    """The line of the first statement before the first entry that is not one of the
    session settings pg_dump writes there, or None. Every session replays that text:
    anything else would run once per session, where the serial load runs it once."""
    for number, line in enumerate(text.split(b"\n"), 1):
        meta_or_comment = line.startswith((b"--", b"\\"))
        if line.strip() and not meta_or_comment and not _PREAMBLE_LINE.fullmatch(line):
            return number
    return None


def entry_keys(kind: str, text: bytes, roots: Roots) -> frozenset[int] | None:
    """The table trees a post-data entry touches; None when not sure (it runs alone)."""
    pattern = _TABLES.get(kind)
    match = pattern.search(text) if pattern else None
    if match is None:
        return None
    names = [match.group(1)]
    also = _ALSO.get(kind)
    if also is not None:
        names += [m.group(1) for m in also.finditer(text, match.end())]
    keys = set()
    for raw in names:
        key = roots.get(name_key(raw))
        if key is None:
            return None
        keys.add(key)
    return frozenset(keys)
