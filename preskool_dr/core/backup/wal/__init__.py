"""The WAL archive behind point-in-time recovery: `wal-push` (archive_command) and
`wal-fetch` (restore_command), plus the listing `check` and `pitr` read.

PostgreSQL runs push and fetch once per WAL segment, as the server's OS user, with only
the postmaster's environment (BACKUP_DIR, S3_BUCKET, AWS_*). So they read neither
runbook.yaml nor any state file: a broken runbook must never stop archiving, which would
fill pg_wal and take production down. boto3 is imported only when a bucket is set.

Layout: `BACKUP_DIR/wal/<name>` beside an md5sum-style sidecar `<name>.md5`, written before
the segment is renamed into place so a segment under its final name always has one; and
`s3://$S3_BUCKET/wal/<name>` with its MD5 in the object metadata (`md5`), sent as
Content-MD5 so S3 itself refuses bytes damaged on the way.

Modules: `names` (WAL file names, segments, LSNs), `settings` (WalSettings: where the archive
is), `push` and `fetch` (the two commands), `s3` (the wal/ objects: MD5, GET, a PUT that never
overwrites), `temp_copy` (chunked reads, verified temp copies), `listing` (what is archived,
gaps) and `health` (what `check` reports).
"""
