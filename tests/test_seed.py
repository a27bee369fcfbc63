from tests.support.db import Database


def test_seeded_database_has_the_preskool_tables_with_rows(database: Database) -> None:
    counts = database.row_counts()
    assert len(counts) == 18
    assert all(n > 0 for n in counts.values()), counts
    assert counts["attendance"] > counts["students"]
