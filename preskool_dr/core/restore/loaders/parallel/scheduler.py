"""Which job a session runs next. Pure code: no threads (the load calls it under its lock),
no PostgreSQL; a session is anything hashable.

The biggest tables load first, each on its own session (as pg_restore -j orders them); a
table another session is loading is helped with only when nothing else is left. A
post-data entry starts once the tables it names are loaded, when no running entry holds a
conflicting lock on the same table tree (index builds share) and the entries of earlier
groups on those tables are done; an entry of the SERIAL group runs alone, in file order,
after all before it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable

from preskool_dr.core.restore.loaders.parallel.jobs import COPY, SERIAL, Job


class Scheduler:
    """The jobs of one load: waiting, running and done."""

    def __init__(self) -> None:
        self.copies: list[Job] = []  # every COPY part, in file order
        self.parts_left: Counter[int] = Counter()  # unfinished parts per block
        self.block_bytes: Counter[int] = Counter()  # SQL bytes of each block scanned so far
        self.block_running: Counter[int] = Counter()  # its parts being loaded now
        self.open_blocks: set[int] = set()  # blocks the scanner may still cut parts from
        self.last_block: dict[Hashable, int] = {}  # the block of each session's last part
        self.waiting: list[Job] = []  # COPY jobs not started
        self.posts: list[Job] = []  # post-data jobs not started, in file order
        self.running: set[Job] = set()
        self.copy_left: Counter[int] = Counter()  # unfinished COPY jobs per table tree
        self.stage_left: Counter[int] = Counter()  # unfinished post-data jobs per stage
        self.serial_stages: Counter[int] = Counter()  # unfinished SERIAL jobs per stage
        self.key_stages: dict[int, Counter[int]] = {}  # per tree: unfinished jobs per stage
        self.bytes_by_key: Counter[int] = Counter()  # data loaded per tree: bigger first
        self.post_total = self.post_done = self.copies_done = 0

    # ------------------------------------------------------------ jobs coming in

    def add_copy(self, job: Job) -> None:
        self.copies.append(job)
        self.waiting.append(job)
        for key in job.keys:
            self.copy_left[key] += 1
        self.parts_left[job.block] += 1
        if job.part == 1:
            self.open_blocks.add(job.block)

    def block_grew(self, block: int, size: int) -> None:
        self.block_bytes[block] = size

    def block_closed(self, block: int) -> None:
        """The scanner passed the end of the block: it has all its parts."""
        self.open_blocks.discard(block)
        if not self.parts_left[block]:
            self.copies_done += 1

    def add_post(self, job: Job) -> None:
        self.posts.append(job)
        self.stage_left[job.stage] += 1
        self._count(job, 1)
        self.post_total += 1

    # ------------------------------------------------------------ jobs going out

    def start_next(self, session: Hashable, *, post_data: bool) -> Job | None:
        """The job `session` runs now, marked running; None: none may start yet.
        `post_data`: post-data jobs may start (every data entry is loaded, or being)."""
        job = self._pick(session, post_data=post_data)
        if job is None:
            return None
        (self.waiting if job.group == COPY else self.posts).remove(job)
        if job.group == COPY:
            self.block_running[job.block] += 1
        job.state = "running"
        self.running.add(job)
        return job

    def finished(self, job: Job, session: Hashable) -> None:
        job.state = "done"
        self.running.discard(job)
        if job.group == COPY:
            self.parts_left[job.block] -= 1
            if not self.parts_left[job.block] and job.block not in self.open_blocks:
                self.copies_done += 1
            for key in job.keys:
                self.copy_left[key] -= 1
                self.bytes_by_key[key] += job.size
            self.block_running[job.block] -= 1
            self.last_block[session] = job.block
        else:
            self.post_done += 1
            self.stage_left[job.stage] -= 1
            self._count(job, -1)

    @property
    def idle(self) -> bool:
        """Nothing waits and nothing runs (the scanner may still add jobs)."""
        return not self.waiting and not self.posts and not self.running

    # ------------------------------------------------------------ for the progress bar

    def loaded(self, scanned: int) -> int:
        """Compressed bytes loaded, of the `scanned` ones: those of the COPY parts not done
        yet are behind."""
        behind = sum(
            max(0, (job.end if job.end is not None else scanned) - max(job.pos, job.start))
            for job in self.copies
            if job.state != "done"
        )
        return max(0, scanned - behind)

    def doing(self, *, data_scanned: bool, sessions: bool) -> str:
        """What the load does now, in a few words (`sessions`: they are connected)."""
        running = sorted(self.running, key=lambda j: j.seq)
        loading = [j.label for j in running if j.group == COPY]
        building = [j.label.split(" ")[-1] for j in running if j.group != COPY]
        current = ", ".join(loading) or ("schema" if not sessions else "tables")
        if data_scanned and not self.waiting and not loading:
            current = f"indexes and constraints ({self.post_done} of {self.post_total})"
            if building:
                current += ": " + ", ".join(building)
        return current

    # ------------------------------------------------------------ the choice

    def _count(self, job: Job, change: int) -> None:
        if job.group == SERIAL:
            self.serial_stages[job.stage] += change
        for key in job.keys if job.group != SERIAL else ():
            self.key_stages.setdefault(key, Counter())[job.stage] += change

    def _after_earlier(self, job: Job) -> bool:
        """Every job of an earlier group on the same tables is done: the file's order where
        it matters (a foreign key needs the referenced table's key; a trigger must not see
        a later load), without waiting for the other tables' index builds."""
        for key in job.keys:
            stages = self.key_stages.get(key)
            if stages and any(left > 0 and stage < job.stage for stage, left in stages.items()):
                return False
        return True

    def _pick(self, session: Hashable, *, post_data: bool) -> Job | None:
        """The heaviest job `session` may start now. The next part of a table weighs the
        table's data: the biggest tables load first, each on its own session, as
        pg_restore -j does; post-data weighs the data of its tables (an index on a big table
        is a long build). A table another session is loading weighs nothing: a session only
        helps with it when nothing else is left, so a table's own index builds still
        overlap the other tables' loads."""
        best: Job | None = None
        best_weight = -1
        for job in self.waiting:  # in file order: a table's first waiting part comes first
            mine = self.last_block.get(session) == job.block
            busy = self.block_running[job.block] and not mine
            weight = 0 if busy else self.block_bytes[job.block]
            if weight > best_weight:
                best, best_weight = job, weight
        if not (post_data and self.posts):
            return best
        first_stage = min(stage for stage, left in self.stage_left.items() if left > 0)
        first_serial = min(
            (st for st, left in self.serial_stages.items() if left > 0), default=None
        )
        # CREATE INDEX takes a SHARE lock: index builds on one table may run together;
        # everything else here (ADD CONSTRAINT, CREATE TRIGGER, ...) excludes the others.
        exclusive: set[int] = set()
        shared: set[int] = set()
        for job in self.running:
            if job.group != COPY:
                (shared if job.shared else exclusive).update(job.keys)
        for job in self.posts:
            if first_serial is not None and job.stage > first_serial:
                break  # nothing passes an entry that runs alone
            if job.group == SERIAL:
                alone = not self.running and not self.waiting and not +self.copy_left
                return job if alone and job.stage == first_stage else best
            if not self._after_earlier(job):
                continue
            if job.keys & exclusive or (not job.shared and job.keys & shared):
                continue
            if any(self.copy_left[key] for key in job.keys):
                continue
            weight = sum(self.bytes_by_key[key] for key in job.keys)
            if weight > best_weight:
                best, best_weight = job, weight
        return best
