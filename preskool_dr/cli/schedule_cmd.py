"""`preskool-dr schedule print|install systemd|cron`: the seed's schedule, ready to install."""

from __future__ import annotations

import argparse
from typing import Any

from preskool_dr.cli.output import tagged
from preskool_dr.core.base.schedule import (
    CRON_DIR,
    SYSTEMD_DIR,
    host_settings,
    install,
    next_steps,
    render,
)


def run(args: argparse.Namespace, ctx: Any) -> int:
    settings = host_settings(
        ctx.runbook,
        user=args.user,
        prometheus_file=args.prometheus,
        check_every=args.check_every,
        env_file=args.env_file,
    )
    files = render(args.format, settings)
    if args.schedule_action == "print":
        if len(files) == 1:
            print(next(iter(files.values())), end="")
        else:  # several units: each under a line naming its file
            print("\n".join(f"# ---- {name}\n{text}" for name, text in files.items()), end="")
        return 0
    folder = args.dir or (SYSTEMD_DIR if args.format == "systemd" else CRON_DIR)
    for path in install(files, folder, force=args.force):
        tagged("OK", f"wrote {path}")
    print("next:")
    for step in next_steps(args.format, folder, settings):
        print(f"  {step}")
    return 0
