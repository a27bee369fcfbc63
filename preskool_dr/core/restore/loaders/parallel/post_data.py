"""Post-data TOC entries -> jobs: which group an entry belongs to (index builds, triggers,
foreign keys, or SERIAL: runs alone), its stage (the file's order between groups), and the
entries that belong to the one before (a COMMENT on the index just made). Pure code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from preskool_dr.core.restore.loaders.parallel.jobs import SERIAL, Job
from preskool_dr.core.restore.loaders.parallel.toc import ATTACHED_TYPES, GROUPS


@dataclass
class Entry:
    """A post-data TOC entry the scanner is still reading."""

    type: str
    name: str
    settings: bytes
    text: list[bytes] = field(default_factory=list)


class PostJobs:
    """Turns finished entries into jobs, handed to `add_post` in file order."""

    def __init__(self, add_post: Callable[[Job], None], next_seq: Callable[[], int]) -> None:
        self._add_post = add_post
        self._next_seq = next_seq
        self.held: Job | None = None  # the last job, until the next entry is known
        self.stage = 0
        self.last_group = ""

    def add(self, entry: Entry, text: bytes, keys: frozenset[int] | None) -> None:
        """Keep the newest post-data job back until the next entry shows whether it belongs
        to it (a COMMENT on the index just made) or runs in file order with it. `keys`: the
        table trees the entry touches, None when not sure (it runs alone)."""
        group = GROUPS.get(entry.type, SERIAL) if keys is not None else SERIAL
        held = self.held
        if held is not None and (
            entry.type in ATTACHED_TYPES or (group == SERIAL and held.group == SERIAL)
        ):
            held.text.append(entry.settings + text)
            return
        self.flush()
        if group != self.last_group or group == SERIAL:
            self.stage += 1
            self.last_group = group
        self.held = Job(
            seq=self._next_seq(),
            label=f"{entry.type} {entry.name}",
            group=group,
            stage=self.stage,
            settings=entry.settings,
            keys=keys or frozenset(),
            text=[text],
            # not when it also alters the table (CLUSTER ON, REPLICA IDENTITY)
            shared=group == "build" and entry.type == "INDEX" and b"ALTER " not in text,
        )

    def flush(self) -> None:
        """The held job goes out: no later entry can join it."""
        held, self.held = self.held, None
        if held is not None:
            self._add_post(held)
