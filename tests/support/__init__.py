"""What the tests share, apart from fixtures (those live in the conftests).

- `leaks`: the marker secrets and the checks that they never show up anywhere.
- `db`: the app role, `Database`, databases cloned from a seeded template, private clusters.
- `runbook`: the repository's runbook, copied with sections replaced.
- `cli`: `preskool-dr` as a child process or in-process, with captured output.
- `child`: a CLI run in the background whose output lines a test waits for.
- `checks`: what a failure must look like (one error line, exit code, no partial file).
- `backups`: backups made by hand, from pg_dump, or doctored; uploads to the bucket.
- `fifo`: a backup served through a named pipe that can stop half way.
- `s3proxy`: an HTTP proxy in front of moto's server that injects faults.
- `moto`: moto's control API (restore transitions, credential checks).
- `health`: health-URL stubs.
- `signing`: ssh-keygen keys and a check with stock OpenSSH.
- `site`: the restore site (database, app commands, health URL, runbook).
- `loaders`: comparing restored databases, psql processes, server sessions.
- `fidelity`: the hard schema (`hard_schema.sql`) and the restore-equals-source comparison.
- `pitr`: the point-in-time-recovery scenario (a cluster archiving WAL with `wal-push`).
- `tui`: driving the Textual app with Pilot and reading the screen.
- `terminal`: a private tmux server running the CLI in a real terminal.
"""
