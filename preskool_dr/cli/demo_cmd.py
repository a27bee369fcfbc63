"""`preskool-dr demo`: the whole restore flow on a throwaway sandbox, then the TUI on it."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib.util
import shlex
import signal
import sys
from types import FrameType, TracebackType
from typing import Any

from preskool_dr.cli import tui_cmd
from preskool_dr.cli.main import Context
from preskool_dr.cli.output import tagged
from preskool_dr.core.base.config import load_config
from preskool_dr.core.base.errors import DrError, UsageError
from preskool_dr.core.base.events import Event, Notice
from preskool_dr.core.restore.engine import default_operator
from preskool_dr.core.storage.catalog import BackupRecord
from preskool_dr.demo.manifest import stop_sandbox
from preskool_dr.demo.sandbox import (
    APP_ROLE,
    BUCKET,
    DATABASE,
    Sandbox,
    environment,
)

SIGNALS = (signal.SIGHUP, signal.SIGTERM)
# What the demo needs beyond preskool-dr's own dependencies: the `[demo]` extra.
DEMO_MODULES = ("moto.server", "flask")
DEMO_EXTRA_HINT = """\
the demo needs the [demo] extra, which is not installed here (missing: {modules}).
Get it with one of:
  pipx install --force 'preskool-dr[demo]'        (a pipx install: or `pipx inject preskool-dr 'moto[server]>=5.1,<6'`)
  pip install 'preskool-dr[demo]'                 (inside the same virtualenv as preskool-dr)
  make demo                                       (from a checkout: sets up everything)
The demo also needs the PostgreSQL server programs (initdb, pg_ctl), e.g. apt install postgresql."""


def missing_demo_modules() -> list[str]:
    """The demo's extra modules that cannot be imported here (checked before anything starts)."""
    missing = []
    for name in DEMO_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a parent package that is missing or broken
            found = False
        if not found:
            missing.append(name.split(".")[0])
    return missing


class _SignalExit(BaseException):
    """SIGHUP/SIGTERM as an exception, so every `finally` (the sandbox's, the TUI's) runs.

    A BaseException, like KeyboardInterrupt: asyncio and Textual let it through instead of
    reporting it as an error in whatever callback it happened to interrupt.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _Guard:
    """Stops the sandbox however the demo ends (return, error, Ctrl-C, SIGHUP, SIGTERM,
    interpreter exit), unless `keep` was set once the sandbox was ready."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.keep = False
        self.done = False
        self.problems: list[str] = []  # what stopping the sandbox could not do
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _Guard:
        atexit.register(self.cleanup)
        for sig in SIGNALS:
            self.previous[sig] = signal.getsignal(sig)
        self.arm()
        return self

    def arm(self) -> None:
        """(Re)install the handlers: the TUI puts its own SIGHUP handler in place while it
        runs and leaves the default (die at once) behind when it ends."""
        for sig in SIGNALS:
            signal.signal(sig, self._on_signal)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.cleanup()
        finally:
            atexit.unregister(self.cleanup)
            for sig, handler in self.previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        raise _SignalExit(signum)

    def cleanup(self) -> None:
        if self.done or self.keep:
            return
        self.done = True
        # A second Ctrl-C or signal must not leave a half-stopped sandbox behind.
        held = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (*SIGNALS, signal.SIGINT)}
        try:
            problems = self.problems = self.sandbox.stop()
        finally:
            for sig, handler in held.items():
                signal.signal(sig, handler)
        for line in self.sandbox.removed:
            _say("STOP", line)
        for problem in problems:
            _say("WARN", problem)


def _say(tag: str, text: str) -> None:
    """A line on stderr, unless the terminal is gone (after SIGHUP writes fail with EIO)."""
    with contextlib.suppress(OSError):
        tagged(tag, text, sys.stderr)


def print_event(event: Event) -> None:
    if isinstance(event, Notice):
        tag = {"info": "DEMO", "ok": "OK", "warn": "WARN", "error": "FAIL"}.get(event.level, "")
        tagged(tag, event.text)


def run(args: argparse.Namespace, ctx: Context) -> int:
    if args.stop:
        removed: list[str] = []
        problems = stop_sandbox(args.stop, removed)
        for line in removed:
            tagged("STOP", line)
        for problem in problems:
            tagged("WARN", problem, sys.stderr)
        if not problems:
            tagged("OK", f"Sandbox {args.stop} stopped and removed")
        return 1 if problems else 0
    if args.no_tui and not args.keep:
        raise UsageError("--no-tui only makes sense with --keep (the sandbox would go at once)")
    if args.scale <= 0 or args.scale > 20:
        raise UsageError(f"--scale must be above 0 and at most 20, got {args.scale}")
    missing = missing_demo_modules()
    if missing:
        raise DrError(DEMO_EXTRA_HINT.format(modules=", ".join(missing)))
    sandbox = Sandbox.create()
    try:
        with _Guard(sandbox) as guard:
            sandbox.start(scale=args.scale, source_runbook=ctx.runbook, on_event=print_event)
            print(intro(sandbox, drill=args.drill))
            code, ran = 0, list[str]()
            if not args.no_tui:
                try:
                    code, ran = _open_tui(sandbox, drill=args.drill)
                finally:
                    guard.arm()
            guard.keep = args.keep
    except _SignalExit as exc:
        name = signal.Signals(exc.signum).name
        _say("STOP", f"demo stopped by {name}; the sandbox was removed")
        return 128 + exc.signum
    if args.keep:
        for line in ran:  # the TUI's own lines: the sandbox and its journal are still there
            print(line)
        print(kept(sandbox))
    elif ran:
        for line in goodbye(ran, removed=not guard.problems):
            print(line)
    return code


def goodbye(summary: list[str], *, removed: bool) -> list[str]:
    """What the shell shows last after the demo's TUI (instead of the prompt that opened
    it): what ran, and that the sandbox went with its journal, so there is nothing to resume.
    `summary`: the TUI's exit lines (tui_cmd.exit_summary), whose first says what ran."""
    lines = [summary[0]]
    if removed:
        lines.append("  sandbox stopped and removed: its PostgreSQL, S3, app and backups are gone")
    else:
        lines.append("  sandbox stopped, but not all of it could be removed: see the WARN lines")
    if "unfinished" in summary[0]:
        lines.append(
            "  the run's journal went with it: nothing to resume (demo --keep keeps a sandbox)"
        )
    return lines


def _open_tui(sandbox: Sandbox, *, drill: bool) -> tuple[int, list[str]]:
    """Run the `tui` command in this process, with the sandbox as its whole environment;
    its exit code and its exit lines (what ran, where it is written, how to resume)."""
    if sys.stdin.isatty():
        with contextlib.suppress(EOFError):
            input("Press Enter to open the TUI (Ctrl-C stops the demo) ")
    with environment(sandbox.full_environ()):
        config = load_config(sandbox.runbook)
        # if the closed terminal blocks the TUI's shutdown, it ends the process itself:
        # the sandbox goes first
        app = tui_cmd.run_app(
            config, drill=drill, operator=default_operator(), before_hard_exit=sandbox.stop
        )
    if app.stop_signal is not None:
        # the TUI stopped itself cleanly on SIGHUP/SIGTERM; now end the demo the same way
        raise _SignalExit(app.stop_signal)
    return app.return_code or 0, tui_cmd.exit_summary(app)


def intro(sandbox: Sandbox, *, drill: bool) -> str:
    assert sandbox.cluster is not None
    target = "preskool_drill (a drill never touches preskool_db)" if drill else DATABASE
    backups = "\n".join(f"    {_describe(record)}" for record in sandbox.records)
    return f"""
PreSkool DR demo: everything below is a throwaway sandbox on this machine.
  PostgreSQL     {sandbox.cluster.host}:{sandbox.cluster.port}, database {DATABASE}, \
data in {sandbox.cluster.data_dir}
  S3 (moto)      {sandbox.s3_url}, bucket {BUCKET}
  Stand-in app   {sandbox.health_url}
  Runbook        {sandbox.runbook}
  age identity   {sandbox.age_identity} (PRESKOOL_DR_AGE_IDENTITY: decrypts the .age backup)
  Backups, newest first:
{backups}

In the TUI: arrow keys select a step, r runs it, s skips it, ? explains it, q quits.
Restore target: {target}. When step 5 asks, type the database name and press Enter.
Quitting (or Ctrl-C, or closing the terminal) stops and removes the whole sandbox.
"""


def _describe(record: BackupRecord) -> str:
    where = " + ".join(record.locations)
    if record.storage_class and record.storage_class != "STANDARD":
        where += f" ({record.storage_class})"
    note = ": archived, restore request first" if record.needs_restore else ""
    if record.name.endswith(".age"):
        note += " (encrypted)"
    return f"{record.name}  {record.kind:<10} {where}{note}"


def kept(sandbox: Sandbox) -> str:
    assert sandbox.cluster is not None
    env = sandbox.env
    program = shlex.quote(sys.argv[0]) if sys.argv[0].endswith("preskool-dr") else "preskool-dr"
    exports = "\n".join(f"  export {k}={shlex.quote(v)}" for k, v in env.items())
    left = "\n".join(f"  - {part}" for part in sandbox.running())
    return f"""
Left running (--keep), until you stop it:
{left}

The sandbox is still running (--keep). Its password and AWS keys are throwaway ones made
for it, printed only because you asked to keep it:
  PGPASSWORD={shlex.quote(sandbox.password)} psql -h {sandbox.cluster.host} \
-p {sandbox.cluster.port} -U {APP_ROLE} {DATABASE}

To use preskool-dr on it from another shell:
{exports}
  {program} list

Stop and remove it:  {program} demo --stop {shlex.quote(str(sandbox.dir))}
(it stops PostgreSQL, the S3 endpoint and the stand-in app, and removes the folders above)
"""
