"""`preskool-dr init`: write a first runbook, the secrets file and the folders."""

from __future__ import annotations

import argparse

from preskool_dr.cli.main import Context
from preskool_dr.cli.output import tagged
from preskool_dr.core.base.runbook_file import runbook_search_path
from preskool_dr.core.base.site_init import default_layout, init_site


def run(args: argparse.Namespace, ctx: Context) -> int:
    layout = default_layout(args.path, backup_dir=args.backup_dir, state=args.state_dir)
    report = init_site(layout, force=args.force)
    for line in report.done:
        tagged("OK", line)
    for line in report.notes:
        tagged("NOTE", line)
    searched = layout.runbook in runbook_search_path()
    use = "" if searched else f" --runbook {layout.runbook}"
    print(
        f"""
Next:
  1. Edit {layout.runbook}: database (host, port, name, users), app commands, retention.
  2. Passwords: a pgpass file of the user that runs the jobs (mode 0600, one line per role):
       echo 'localhost:5432:*:postgres:ADMIN_PASSWORD' >> ~/.pgpass; chmod 600 ~/.pgpass
     S3 bucket and AWS keys: uncomment them in {layout.env_file}.
  3. Check it:        preskool-dr{use} config check
  4. First backup:    preskool-dr{use} backup      then   preskool-dr{use} restore-test
  cron and systemd read {layout.env_file} (it names the runbook; the runbook names the
  state folder, {layout.state_dir}, for every user)."""
    )
    return 0
