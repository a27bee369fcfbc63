"""The embedded sandbox behind `preskool-dr demo` and the test suite: a private PostgreSQL
cluster, seeded PreSkool data, a stand-in app with a health URL."""
