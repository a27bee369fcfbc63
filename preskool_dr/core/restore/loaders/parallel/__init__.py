"""Step 6 over N sessions: a plain `.sql.gz` restored in parallel, to the same end state as
`gunzip -c F | psql -v ON_ERROR_STOP=1`.

pg_dump's plain output is a list of TOC entries, each introduced by a comment block
(`--` / `-- Name: x; Type: INDEX; Schema: public; Owner: preskool` / `--`), in three
sections: pre-data (the schema), data (one COPY block per table, sequence values) and
post-data (keys, indexes, triggers, foreign keys), then ACLs. The load:

1. pre-data: everything before the first data entry goes, byte for byte, into one psql,
   which must finish before any table is loaded (its error lines are the file's lines);
2. data: a scanner inflates the file once, ahead of the loaders, and notes where every
   COPY block starts (the compressed offset and a copy of the zlib state there); each of
   N sessions inflates its blocks from that point and hands the rows to the server over
   its own connection (psycopg's COPY: no psql reading them from a pipe). A block longer
   than `split_bytes` is cut at row ends into parts, each its own COPY of the same table,
   so that sessions left idle can help with a table that would hold up the load alone (its
   rows then sit in the table's pages in another order than the serial load leaves them:
   the same rows, as `SELECT` without ORDER BY promises nothing about order). Other data
   entries (sequence values, large objects) go in file order into one more psql;
3. post-data: an entry starts once the tables it names are loaded, when no running entry
   holds a conflicting lock on the same table tree (index builds share; no lock waits, no
   deadlocks) and the entries of earlier groups on those tables are done (keys and indexes,
   then triggers, then foreign keys: the file's order where it matters). Entries this
   loader does not recognise run alone, in file order, after all before them.
   The biggest tables load first, each on its own session (as pg_restore -j orders them),
   and a table's index builds start as soon as its rows are in, beside the other loads.

Cuts are made only where psql itself stands between two statements: core/storage/sql_lexer.py
follows the SQL between COPY blocks (strings, E-strings, dollar quotes, quoted names, nested
comments) as psql does, so TOC-shaped lines inside a string are the string's; COPY headers
are parsed exactly (a quoted table name may hold a newline) and COPY rows are never lexed,
only their terminator line found. Text the lexer cannot classify with certainty sends the whole
file through the serial stream when it shows in the pre-data (which is held back until the
lexer has seen it all, so nothing is loaded yet), and stops the load with a message later.

Every psql runs with ON_ERROR_STOP and a failed COPY raises; the first failure stops every
session and their server backends, as the serial load stops at its first error. A watchdog
fails the load when nothing moves for WATCHDOG_SECONDS (no bytes scanned or loaded, no job
done, no server session of the load working), naming what it waited for, instead of
waiting forever on a lock nobody releases or a sync marker that never comes back.
Memory stays flat: the scanner holds at most MAX_LOOKAHEAD block starts (~40 KiB of zlib
state each), post-data DDL text, and up to PRE_DATA_HOLD bytes of pre-data.

Where things are (the scanner and the scheduler are pure code, tested without PostgreSQL):
- load.py: `parallel_restore` and `Restore`: threads, the scheduling loop, progress, failures;
  feed.py: the scanner thread's side (reads the file, delivers what the scanner makes of it);
- scanner.py: the text -> pre-data, data and post-data work (`Scanner`, fed piece by piece);
  toc.py: what pg_dump's entry headers and settings look like; copy_parts.py: COPY blocks
  -> parts; post_data.py: post-data entries -> jobs; pieces.py: the gzip pieces;
- scheduler.py: which job a session runs next; jobs.py: the job record;
- sessions.py: psql processes, COPY connections, the catalog's table trees, error wording;
- watchdog.py: what "nothing moves" means, and the server check behind it.
"""

from preskool_dr.core.restore.loaders.parallel.load import (
    SPLIT_BYTES,
    SplitUnsure,
    parallel_restore,
    resolve_jobs,
    unsupported_reason,
)
from preskool_dr.core.restore.loaders.parallel.sessions import stop_backends
from preskool_dr.core.restore.loaders.parallel.watchdog import WATCHDOG_SECONDS

__all__ = [
    "SPLIT_BYTES",
    "WATCHDOG_SECONDS",
    "SplitUnsure",
    "parallel_restore",
    "resolve_jobs",
    "stop_backends",
    "unsupported_reason",
]
