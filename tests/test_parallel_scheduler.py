"""The parallel loader's scheduler on made-up jobs (no PostgreSQL, no threads): the biggest
tables first, each on its own session; a table being loaded is helped with only when
nothing else is left; post-data waits for the data section, its tables' rows, earlier
groups on the same tables and conflicting locks; an entry that runs alone runs alone, in
file order; and the progress words."""

from __future__ import annotations

from itertools import count

from preskool_dr.core.restore.loaders.parallel.jobs import COPY, SERIAL, Job
from preskool_dr.core.restore.loaders.parallel.scheduler import Scheduler

_seqs = count(1)


def part(block: int, key: int, number: int = 1, *, size: int = 0) -> Job:
    seq = next(_seqs) if number > 1 else block
    return Job(
        seq=seq,
        label=f"t{key}",
        group=COPY,
        stage=0,
        settings=b"",
        keys=frozenset({key}),
        block=block,
        part=number,
        size=size,
    )


def post(label: str, group: str, stage: int, *keys: int, shared: bool = False) -> Job:
    return Job(
        seq=next(_seqs) + 1000,
        label=label,
        group=group,
        stage=stage,
        settings=b"",
        keys=frozenset(keys),
        shared=shared,
    )


def index(label: str, stage: int, key: int) -> Job:
    return post(f"INDEX {label}", "build", stage, key, shared=True)


def started(plan: Scheduler, *sessions: str, post_data: bool = True) -> list[str | None]:
    """The label each session starts now (None: it stays idle), in session order."""
    labels: list[str | None] = []
    for session in sessions:
        job = plan.start_next(session, post_data=post_data)
        labels.append(job.label if job else None)
    return labels


def running(plan: Scheduler, label: str) -> Job:
    return next(j for j in plan.running if j.label == label)


def test_biggest_tables_first_each_on_its_own_session() -> None:
    plan = Scheduler()
    for block, size in ((1, 10), (2, 30), (3, 20)):
        plan.add_copy(part(block, key=block))
        plan.block_grew(block, size)
    assert started(plan, "A", "B", "C", "D") == ["t2", "t3", "t1", None]
    assert plan.waiting == [] and len(plan.running) == 3


def test_a_table_being_loaded_is_helped_with_last() -> None:
    """Another part of a table a session is loading weighs nothing for the others: they
    take any other table first, and help only when nothing else is left. The session that
    loaded a part takes the next part of its own table at its full weight."""
    plan = Scheduler()
    plan.add_copy(part(1, key=1))
    plan.add_copy(part(1, key=1, number=2))
    plan.block_grew(1, 100)
    plan.add_copy(part(2, key=2))
    plan.block_grew(2, 10)
    assert started(plan, "A", "B", "C") == ["t1", "t2", "t1"]
    first = next(j for j in plan.running if j.block == 1 and j.part == 1)
    plan.finished(first, "A")
    plan.add_copy(part(1, key=1, number=3))
    plan.add_copy(part(3, key=3))
    plan.block_grew(3, 50)
    # for D, block 1 is busy (C loads part 2): table 3 first; for A it is its own table
    assert started(plan, "D") == ["t3"]
    assert [j.part for j in plan.running if j.block == 1] == [2]
    assert started(plan, "A") == ["t1"]


def test_post_data_waits_for_the_data_section_and_its_tables() -> None:
    plan = Scheduler()
    plan.add_copy(part(1, key=1))
    plan.add_post(index("i1", 1, key=1))
    plan.add_post(index("i2", 1, key=2))
    assert started(plan, "A", post_data=False) == ["t1"]
    assert started(plan, "B", post_data=False) == [None]  # data still loading elsewhere
    assert started(plan, "B") == ["INDEX i2"]  # table 2 has no rows left to load
    assert started(plan, "C") == [None]  # table 1 is still being loaded
    plan.finished(running(plan, "t1"), "A")
    assert started(plan, "A") == ["INDEX i1"]


def test_index_builds_share_a_table_other_entries_do_not() -> None:
    """CREATE INDEX takes a SHARE lock: builds on one table run together; a constraint on
    that table waits for them, and a build waits for a running constraint."""
    plan = Scheduler()
    plan.add_post(index("i1", 1, key=1))
    plan.add_post(index("i2", 1, key=1))
    plan.add_post(post("CONSTRAINT pk", "build", 1, 1))
    plan.add_post(index("i3", 1, key=1))
    assert started(plan, "A", "B", "C") == ["INDEX i1", "INDEX i2", "INDEX i3"]
    assert started(plan, "D") == [None]
    for label, session in (("INDEX i1", "A"), ("INDEX i2", "B"), ("INDEX i3", "C")):
        plan.finished(running(plan, label), session)
    plan.add_post(index("i4", 1, key=1))
    assert started(plan, "A", "B") == ["CONSTRAINT pk", None]


def test_later_groups_wait_for_earlier_groups_on_their_tables_only() -> None:
    """A foreign key (a later stage) on tables 1 and 2 waits for table 1's index build,
    not for the build on the unrelated table 3."""
    plan = Scheduler()
    plan.add_post(index("i1", 1, key=1))
    plan.add_post(index("i3", 1, key=3))
    plan.add_post(post("FK CONSTRAINT fk", "fk", 2, 1, 2))
    assert started(plan, "A", "B", "C") == ["INDEX i1", "INDEX i3", None]
    plan.finished(running(plan, "INDEX i1"), "A")
    assert started(plan, "A") == ["FK CONSTRAINT fk"]
    assert "INDEX i3" in {j.label for j in plan.running}


def test_an_entry_that_runs_alone_runs_alone_in_file_order() -> None:
    """A SERIAL entry starts once everything before it is done and nothing else runs;
    nothing after it passes it."""
    plan = Scheduler()
    plan.add_copy(part(1, key=1))
    plan.add_post(index("i1", 1, key=2))
    plan.add_post(post("POLICY p", SERIAL, 2))
    plan.add_post(index("i3", 3, key=3))
    assert started(plan, "A", "B", "C") == ["t1", "INDEX i1", None]
    plan.finished(running(plan, "INDEX i1"), "B")
    assert started(plan, "B") == [None]  # a COPY still runs
    plan.finished(running(plan, "t1"), "A")
    assert started(plan, "A", "B") == ["POLICY p", None]
    plan.finished(running(plan, "POLICY p"), "A")
    assert started(plan, "A") == ["INDEX i3"]
    plan.finished(running(plan, "INDEX i3"), "A")
    assert plan.idle


def test_post_data_on_bigger_tables_first() -> None:
    """An index on a big table is a long build: it starts first."""
    plan = Scheduler()
    plan.add_copy(part(1, key=1, size=10))
    plan.add_copy(part(2, key=2, size=1000))
    assert started(plan, "A", "B") == ["t1", "t2"]
    plan.finished(running(plan, "t1"), "A")
    plan.finished(running(plan, "t2"), "B")
    plan.add_post(index("small", 1, key=1))
    plan.add_post(index("big", 1, key=2))
    assert started(plan, "A", "B") == ["INDEX big", "INDEX small"]


def test_tables_done_count_blocks_whatever_order_their_parts_end() -> None:
    plan = Scheduler()
    plan.add_copy(part(1, key=1))
    started(plan, "A")
    plan.finished(running(plan, "t1"), "A")
    assert plan.copies_done == 0  # the scanner may still cut parts from it
    plan.add_copy(part(1, key=1, number=2))
    plan.block_closed(1)
    assert plan.copies_done == 0
    started(plan, "A")
    plan.finished(running(plan, "t1"), "A")
    assert plan.copies_done == 1
    plan.add_copy(part(2, key=2))
    started(plan, "B")
    plan.finished(running(plan, "t2"), "B")
    plan.block_closed(2)
    assert plan.copies_done == 2 and plan.idle


def test_progress_words_and_bytes() -> None:
    plan = Scheduler()
    assert plan.doing(data_scanned=False, sessions=False) == "schema"
    first = part(1, key=1)
    first.start, first.pos = 100, 150
    plan.add_copy(first)
    plan.add_copy(part(2, key=2))
    assert started(plan, "A") == ["t1"]
    assert plan.doing(data_scanned=False, sessions=True) == "t1"
    # part 1 is loaded up to byte 150 of the 400 scanned; part 2 (from 0) not at all
    assert plan.loaded(400) == 0
    plan.copies[1].start = plan.copies[1].pos = 400
    assert plan.loaded(400) == 150
    plan.finished(running(plan, "t1"), "A")
    started(plan, "A")
    plan.finished(running(plan, "t2"), "A")
    plan.add_post(index("i1", 1, key=1))
    plan.add_post(index("i2", 1, key=2))
    started(plan, "A")
    assert plan.doing(data_scanned=True, sessions=True) == "indexes and constraints (0 of 2): i1"
