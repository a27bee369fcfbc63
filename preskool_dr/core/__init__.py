"""The UI-free core: config, catalog, checksum, backup, database, restore engine, journal,
monitoring and drill log. Nothing here may import textual (tests/test_import_hygiene.py)."""
