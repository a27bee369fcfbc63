"""The parallel loader's scanner on text alone (no PostgreSQL, no processes): a small dump in
pg_dump's plain format, gzipped in memory and fed in pieces of any size, becomes the same
pre-data text, data-session text, COPY parts and post-data jobs; TOC-shaped lines inside
strings, dollar quotes and comments are not cuts; a COPY part's checkpoint inflates exactly
its rows; text it cannot be sure of raises Unsure (loaded or not), odd files stop it."""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field

import pytest

from preskool_dr.core.base import deflate
from preskool_dr.core.base.errors import DrError, VerificationError
from preskool_dr.core.restore.loaders.parallel.jobs import COPY, SERIAL, Job
from preskool_dr.core.restore.loaders.parallel.pieces import Piece
from preskool_dr.core.restore.loaders.parallel.scanner import Scanner, Unsure
from preskool_dr.core.restore.loaders.parallel.toc import Roots

PREAMBLE = (
    b"--\n-- PostgreSQL database dump\n--\n\n"
    b"SET statement_timeout = 0;\n"
    b"SET client_encoding = 'UTF8';\n"
    b"SET standard_conforming_strings = on;\n"
    b"SELECT pg_catalog.set_config('search_path', '', false);\n\n"
)
SETTINGS = (
    b"SET statement_timeout = 0;\n"
    b"SET client_encoding = 'UTF8';\n"
    b"SET standard_conforming_strings = on;\n"
    b"SELECT pg_catalog.set_config('search_path', '', false);\n"
)
END = b"--\n-- PostgreSQL database dump complete\n--\n\n"
ROOTS: Roots = {("public", "a"): 1, ("public", "b"): 2, ("public", "Odd Name"): 3}


def toc(name: str, kind: str, *, data: bool = False) -> bytes:
    prefix = "Data for " if data else ""
    return f"--\n-- {prefix}Name: {name}; Type: {kind}; Schema: public; Owner: app\n--\n\n".encode()


SCHEMA = (
    toc("a", "TABLE")
    + b"CREATE TABLE public.a (id integer, note text);\n\n\n"
    + toc("b", "TABLE")
    + b"CREATE TABLE public.b (id integer, a_id integer);\n\n\n"
)
DATA = (
    toc("a", "TABLE DATA", data=True)
    + b"COPY public.a (id, note) FROM stdin;\n1\tone\n2\ttwo\n\\.\n\n\n"
    + toc("b", "TABLE DATA", data=True)
    + b"COPY public.b (id, a_id) FROM stdin;\n1\t1\n\\.\n\n\n"
    + toc("b_id_seq", "SEQUENCE SET")
    + b"SELECT pg_catalog.setval('public.b_id_seq', 1, true);\n\n\n"
)
POST = (
    toc("a a_pkey", "CONSTRAINT")
    + b"ALTER TABLE ONLY public.a\n    ADD CONSTRAINT a_pkey PRIMARY KEY (id);\n\n\n"
    + toc("a_note", "INDEX")
    + b"CREATE INDEX a_note ON public.a USING btree (note);\n\n\n"
    + toc("INDEX a_note", "COMMENT")
    + b"COMMENT ON INDEX public.a_note IS 'notes';\n\n\n"
    + toc("b b_a_fkey", "FK CONSTRAINT")
    + b"ALTER TABLE ONLY public.b\n"
    + b"    ADD CONSTRAINT b_a_fkey FOREIGN KEY (a_id) REFERENCES public.a(id);\n\n\n"
)
DUMP = PREAMBLE + SCHEMA + DATA + POST + END


@dataclass
class Sink:
    """A ScanSink that keeps everything, for the test to look at."""

    text: bytes  # the whole dump, for line_at
    roots: Roots = field(default_factory=lambda: dict(ROOTS))
    pre: list[bytes] = field(default_factory=list)
    serial: list[bytes] = field(default_factory=list)
    copies: list[Job] = field(default_factory=list)
    posts: list[Job] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)  # the order of the section calls
    preamble: bytes | None = None
    scanned: dict[int, int] = field(default_factory=dict)  # part seq -> compressed offset
    closed: list[int] = field(default_factory=list)
    sizes: dict[int, int] = field(default_factory=dict)  # block -> SQL bytes scanned

    def pre_data(self, data: bytes) -> None:
        self.pre.append(data)

    def start_sessions(self, preamble: bytes) -> None:
        self.calls.append("start_sessions")
        self.preamble = preamble

    def end_pre_data(self, *, data_follows: bool) -> Roots:
        self.calls.append(f"end_pre_data({data_follows})")
        return self.roots

    def serial_data(self, data: bytes) -> None:
        self.serial.append(data)

    def add_copy(self, job: Job) -> None:
        self.copies.append(job)

    def part_scanned(self, job: Job, offset: int) -> None:
        self.scanned[job.seq] = offset

    def block_grew(self, block: int, size: int) -> None:
        self.sizes[block] = size

    def block_closed(self, block: int) -> None:
        self.closed.append(block)

    def add_post(self, job: Job) -> None:
        self.posts.append(job)

    def data_scanned_to_end(self) -> None:
        self.calls.append("data_scanned_to_end")

    def line_at(self, offset: int) -> int:
        return self.text.count(b"\n", 0, offset) + 1


def same_settings(found: bytes, expected: bytes) -> bool:
    """The same settings, one line each (settings first seen together are replayed in
    the order the scanner meets them walking back from the entry's end)."""
    return sorted(found.splitlines()) == sorted(expected.splitlines())


def pieces(text: bytes, size: int) -> tuple[bytes, list[Piece]]:
    """`text` gzipped (stored, so compressed and plain sizes match) and inflated `size`
    compressed bytes at a time, each piece with the zlib state before it, as the load's
    scanner gets them."""
    compressed = gzip.compress(text, compresslevel=0)
    inflater = deflate.decompressor()
    found = []
    for start in range(0, len(compressed), size):
        chunk = compressed[start : start + size]
        before = inflater.copy()
        found.append(Piece(inflater.decompress(chunk), start, start + len(chunk), before))
    return compressed, found


def scan(text: bytes, *, size: int = 1 << 20, split_bytes: int = 0) -> Sink:
    sink = Sink(text)
    scanner = Scanner(sink, "b.sql.gz", split_bytes)
    for piece in pieces(text, size)[1]:
        scanner.feed(piece)
    scanner.finish()
    return sink


def outline(sink: Sink) -> tuple[object, ...]:
    """What the load would do with the scan, without the zlib states."""
    copies = [(j.seq, j.label, j.header, j.part, j.keys, j.settings) for j in sink.copies]
    posts = [
        (j.seq, j.label, j.group, j.stage, j.keys, j.shared, j.settings, b"".join(j.text))
        for j in sink.posts
    ]
    return (
        b"".join(sink.pre),
        b"".join(sink.serial),
        sink.preamble,
        sink.calls,
        copies,
        posts,
        sink.closed,
    )


def test_sections_go_where_they_belong() -> None:
    """Pre-data goes to the schema session byte for byte; every session replays the
    preamble; each table's COPY is one job keyed by its table tree; sequence values go to
    the data session; post-data entries become jobs in groups and stages."""
    sink = scan(DUMP)
    assert b"".join(sink.pre) == PREAMBLE + SCHEMA
    assert sink.preamble == PREAMBLE
    assert sink.calls == ["start_sessions", "end_pre_data(True)", "data_scanned_to_end"]
    assert [(j.label, j.header, j.keys, j.group) for j in sink.copies] == [
        ("public.a", b"COPY public.a (id, note) FROM stdin;\n", frozenset({1}), COPY),
        ("public.b", b"COPY public.b (id, a_id) FROM stdin;\n", frozenset({2}), COPY),
    ]
    assert all(same_settings(j.settings, SETTINGS) for j in sink.copies)
    assert sink.closed == [j.block for j in sink.copies]
    serial = b"".join(sink.serial)
    header = serial.index(toc("b_id_seq", "SEQUENCE SET"))
    assert same_settings(serial[:header], SETTINGS)  # where the entry starts
    assert b"setval('public.b_id_seq', 1, true)" in serial and b"COPY" not in serial
    assert [(j.label, j.group, j.stage, j.keys, j.shared) for j in sink.posts] == [
        ("CONSTRAINT a a_pkey", "build", 1, frozenset({1}), False),
        ("INDEX a_note", "build", 1, frozenset({1}), True),
        ("FK CONSTRAINT b b_a_fkey", "fk", 2, frozenset({1, 2}), False),
        ("END end of dump", SERIAL, 3, frozenset(), False),
    ]
    index = sink.posts[1]
    assert len(index.text) == 2 and b"COMMENT ON INDEX public.a_note" in index.text[1]
    assert all(same_settings(j.settings, SETTINGS) for j in sink.posts)


@pytest.mark.parametrize("size", [1, 2, 5, 64, 333])
def test_any_piece_size_gives_the_same_work(size: int) -> None:
    """Headers, COPY lines and terminators split between pieces are found all the same."""
    assert outline(scan(DUMP, size=size)) == outline(scan(DUMP))


@pytest.mark.parametrize(
    "hiding",
    [
        # a dollar-quoted function body
        b"CREATE FUNCTION public.f() RETURNS integer LANGUAGE sql AS $body$\n%s"
        b"SELECT 1\n$body$;\n\n\n",
        # a string with a doubled quote before the TOC lines
        b"COMMENT ON TABLE public.a IS 'it''s\n%s';\n\n\n",
        # a nested block comment
        b"/* outer /* inner */\n%s*/\nSELECT 1;\n\n\n",
        # a quoted name
        b'CREATE TABLE public."x\n%s" (n integer);\n\n\n',
    ],
)
def test_toc_lines_inside_sql_are_not_cuts(hiding: bytes) -> None:
    """TOC-shaped lines (a data entry and its COPY, an index) inside a string, a dollar
    quote, a comment or a quoted name are the SQL's: they go with it to the schema
    session, start no data section and make no job."""
    planted = toc("a", "TABLE DATA", data=True) + b"COPY public.a (id) FROM stdin;\n"
    planted += toc("evil", "INDEX") + b"DROP TABLE public.b;\n"
    text = hiding.replace(b"%s", planted)
    dump = PREAMBLE + SCHEMA + toc("f", "FUNCTION") + text + DATA + POST + END
    sink = scan(dump)
    assert b"".join(sink.pre) == PREAMBLE + SCHEMA + toc("f", "FUNCTION") + text
    assert [j.label for j in sink.copies] == ["public.a", "public.b"]
    assert [j.label for j in sink.posts] == [j.label for j in scan(DUMP).posts]


def test_toc_lines_inside_a_post_data_string_stay_in_their_job() -> None:
    """A comment on an index whose string holds an INDEX header: one job, not two."""
    planted = b"COMMENT ON INDEX public.a_note IS '\n" + toc("evil", "INDEX") + b"';\n\n\n"
    dump = DUMP.replace(b"COMMENT ON INDEX public.a_note IS 'notes';\n\n\n", planted)
    sink = scan(dump, size=7)
    assert [j.label for j in sink.posts] == [j.label for j in scan(DUMP).posts]
    assert b"Name: evil" in b"".join(sink.posts[1].text)


def test_settings_before_an_entry_are_replayed_with_it() -> None:
    """A SET between entries belongs to the entries after it: each job carries the
    settings in force where it starts (the last value of each), not the text before."""
    dump = DUMP.replace(
        toc("a_note", "INDEX"),
        b"SET default_tablespace = fast;\n\n" + toc("a_note", "INDEX"),
    )
    sink = scan(dump)
    constraint, index = sink.posts[0], sink.posts[1]
    assert b"default_tablespace" not in b"".join(constraint.text)
    assert same_settings(index.settings, SETTINGS + b"SET default_tablespace = fast;\n")


def test_unknown_entries_run_alone_and_unknown_tables_too() -> None:
    """A post-data entry of a type the loader does not know, or on a table the catalog
    does not name, is SERIAL: a stage of its own; adjacent SERIAL entries are one job."""
    extra = toc("p", "POLICY") + b"CREATE POLICY p ON public.a USING (true);\n\n\n"
    extra += toc("z_i", "INDEX") + b"CREATE INDEX z_i ON public.z USING btree (n);\n\n\n"
    extra += toc("b_i", "INDEX") + b"CREATE INDEX b_i ON public.b USING btree (id);\n\n\n"
    sink = scan(PREAMBLE + SCHEMA + DATA + extra + END)
    assert [(j.label, j.group, j.stage) for j in sink.posts] == [
        ("POLICY p", SERIAL, 1),
        ("INDEX b_i", "build", 2),
        ("END end of dump", SERIAL, 3),
    ]
    assert b"CREATE INDEX z_i" in b"".join(sink.posts[0].text)


def test_quoted_table_names_find_their_tree() -> None:
    """A COPY header and an index on a quoted name with a space find the catalog's entry."""
    data = (
        toc("Odd Name", "TABLE DATA", data=True)
        + b'COPY public."Odd Name" (n) FROM stdin;\n1\n\\.\n\n\n'
    )
    post = toc("odd_i", "INDEX") + b'CREATE INDEX odd_i ON public."Odd Name" USING btree (n);\n\n'
    sink = scan(PREAMBLE + SCHEMA + data + post + END)
    assert [(j.label, j.keys) for j in sink.copies] == [('public."Odd Name"', frozenset({3}))]
    assert sink.posts[0].keys == frozenset({3})


def test_names_with_semicolons_are_entry_headers() -> None:
    """pg_dump writes schema and owner names as they are: a schema `we"ird; schema` still
    starts a TABLE DATA entry (the fidelity test found this load stopped on it)."""
    weird = (
        b'--\n-- Data for Name: Odd Name; Type: TABLE DATA; Schema: we"ird; schema \xf0\x9f\xa6\x84; '
        b"Owner: app; x\n--\n\n" + b'COPY public."Odd Name" (n) FROM stdin;\n1\n\\.\n\n\n'
    )
    sink = scan(
        PREAMBLE
        + SCHEMA
        + DATA.replace(
            b"\n\n\n--\n-- Name: b_id_seq", b"\n\n\n" + weird + b"--\n-- Name: b_id_seq", 1
        )
        + POST
        + END
    )
    assert 'public."Odd Name"' in [j.label for j in sink.copies]


def test_a_header_that_reads_two_ways_is_a_doubt() -> None:
    """A name holding `; Type: X; Schema: ` makes the header's type unknowable: Unsure
    (before anything loaded: the whole file goes serially), at the header's line."""
    hidden = toc("a; Type: TABLE DATA; Schema: public; Owner: app; x", "INDEX")
    dump = PREAMBLE + hidden + b"SELECT 1;\n\n" + SCHEMA + DATA + POST + END
    with pytest.raises(Unsure) as unsure:
        scan(dump)
    assert not unsure.value.loaded
    assert "reads as TABLE DATA and as INDEX" in unsure.value.reason
    assert dump.split(b"\n")[unsure.value.line - 1].startswith(b"-- Name: a; Type: TABLE DATA")


def rows_of(compressed: bytes, job: Job) -> bytes:
    """The decompressed text from a part's checkpoint on, as a session reads it."""
    checkpoint = job.checkpoint
    assert checkpoint is not None
    data = checkpoint.inflater.copy().decompress(compressed[checkpoint.offset :])
    return data[checkpoint.skip :]


@pytest.mark.parametrize("size", [1, 7, 50, 4096])
@pytest.mark.parametrize("split", [10, 33, 100])
def test_copy_parts_cut_at_row_ends(size: int, split: int) -> None:
    """With split_bytes, a block is cut at the first row end after that many bytes; each
    part's checkpoint inflates from exactly its first row, and the parts together are the
    block's rows (a cut right before the terminator makes no empty part)."""
    rows = b"".join(b"%d\trow number %d\n" % (n, n) for n in range(40))
    data = toc("a", "TABLE DATA", data=True) + b"COPY public.a (id, note) FROM stdin;\n"
    data += rows + b"\\.\n\n\n"
    text = PREAMBLE + SCHEMA + data + POST + END
    compressed, found = pieces(text, size)
    sink = Sink(text)
    scanner = Scanner(sink, "b.sql.gz", split)
    for piece in found:
        scanner.feed(piece)
    scanner.finish()
    parts = sink.copies
    assert [j.part for j in parts] == list(range(1, len(parts) + 1))
    assert len(parts) > 1 and {j.block for j in parts} == {parts[0].seq}
    assert all(j.keys == frozenset({1}) and j.header == parts[0].header for j in parts)
    loaded = b""
    for job in parts:
        assert job.size > 0 and job.seq in sink.scanned
        part = rows_of(compressed, job)[: job.size]
        assert part.endswith(b"\n")
        if job is not parts[-1]:
            assert job.size >= split
        loaded += part
    assert loaded.removesuffix(b"\\.\n") == rows
    assert sink.closed == [parts[0].block]


def test_no_split_with_split_bytes_zero() -> None:
    rows = b"".join(b"%d\tx\n" % n for n in range(100))
    data = toc("a", "TABLE DATA", data=True) + b"COPY public.a (id, note) FROM stdin;\n"
    sink = scan(PREAMBLE + SCHEMA + data + rows + b"\\.\n\n\n" + END, size=9)
    assert [j.part for j in sink.copies] == [1]
    assert sink.copies[0].size == len(rows) + 3


def test_doubt_in_the_pre_data_loads_nothing() -> None:
    """A COPY the scanner does not recognise in the pre-data: Unsure, not loaded (the
    whole file can go serially), at its line; nothing reached the schema session."""
    planted = b"copy public.a (id) from stdin;\n1\n\\.\n"
    dump = PREAMBLE + SCHEMA + planted + DATA + POST + END
    with pytest.raises(Unsure) as unsure:
        scan(dump)
    assert not unsure.value.loaded
    assert "COPY" in unsure.value.reason
    assert dump.split(b"\n")[unsure.value.line - 1] == planted.split(b"\n")[0]


def test_sql_in_the_preamble_is_a_doubt() -> None:
    """Every session replays the preamble: a statement there would run once per session."""
    dump = DUMP.replace(b"SET statement_timeout = 0;\n", b"CREATE TABLE public.once (n int);\n")
    with pytest.raises(Unsure) as unsure:
        scan(dump)
    assert not unsure.value.loaded
    assert "session settings" in unsure.value.reason
    assert dump.split(b"\n")[unsure.value.line - 1] == b"CREATE TABLE public.once (n int);"


def test_doubt_in_the_post_data_says_part_is_loaded() -> None:
    """After tables went to the sessions, a doubt can only stop the load: `loaded`, and its
    line counted over the COPY rows the lexer never saw."""
    planted = toc("zz", "INDEX") + b"copy public.a (id) from stdin;\n7\n\\.\n"
    dump = PREAMBLE + SCHEMA + DATA + POST + planted + END
    with pytest.raises(Unsure) as unsure:
        scan(dump, size=11)
    assert unsure.value.loaded
    assert dump.split(b"\n")[unsure.value.line - 1] == b"copy public.a (id) from stdin;"


def test_psql_variable_is_a_doubt() -> None:
    dump = DUMP.replace(b"CREATE TABLE public.b (", b"CREATE TABLE :schema.b (")
    with pytest.raises(Unsure) as unsure:
        scan(dump)
    assert "variable" in unsure.value.reason and not unsure.value.loaded


def test_sql_after_a_parallel_copy_stops_the_scan() -> None:
    """Between parallel COPY blocks only settings may stand: other SQL there is not
    pg_dump's plain output."""
    dump = DUMP.replace(b"2\ttwo\n\\.\n\n\n", b"2\ttwo\n\\.\n\nDELETE FROM public.a;\n\n", 1)
    with pytest.raises(DrError, match=r"unexpected SQL after the data of public\.a"):
        scan(dump)


def test_sql_before_a_copy_sends_the_entry_to_the_data_session() -> None:
    """A TABLE DATA entry with a statement before its COPY (DISABLE TRIGGER ALL, as
    pg_dump --disable-triggers writes) is loaded whole by the data session."""
    before = b"ALTER TABLE public.b DISABLE TRIGGER ALL;\n\n"
    dump = DUMP.replace(b"COPY public.b (id, a_id)", before + b"COPY public.b (id, a_id)")
    sink = scan(dump)
    assert [j.label for j in sink.copies] == ["public.a"]
    serial = b"".join(sink.serial)
    assert before + b"COPY public.b (id, a_id) FROM stdin;\n1\t1\n\\.\n" in serial


def test_schema_only_dump() -> None:
    sink = scan(PREAMBLE + SCHEMA + END)
    assert sink.calls == ["start_sessions", "end_pre_data(False)"]
    assert b"".join(sink.pre) == PREAMBLE + SCHEMA + END
    assert sink.copies == [] and sink.posts == []


def test_empty_and_cut_off_files() -> None:
    with pytest.raises(VerificationError, match="is empty"):
        scan(b"")
    cut = DUMP[: DUMP.index(b"2\ttwo\n")]
    with pytest.raises(DrError, match=r"ends inside the data of public\.a"):
        scan(cut)
