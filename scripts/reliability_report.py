#!/usr/bin/env python3
"""Run the fault-injection suite (tests/faults) and write docs/RELIABILITY.md from the run.

The document is generated, never edited by hand: the guarantees come from each test
module's docstring (the paragraph starting "Guarantee:"), the cases from each test's
docstring and parameters, the results from this run. A new category is a new
tests/faults/test_<name>.py; it appears here by itself.

    .venv/bin/python scripts/reliability_report.py                 # run all, write the doc
    .venv/bin/python scripts/reliability_report.py -k s3           # extra pytest arguments
    .venv/bin/python scripts/reliability_report.py --output /tmp/R.md

Exit status: pytest's (0 when every case passed); the document is written either way.
"""

from __future__ import annotations

import argparse
import inspect
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SUITE = REPO / "tests" / "faults"
DEFAULT_OUTPUT = REPO / "docs" / "RELIABILITY.md"
# The issues' order, each hostile-input category beside the fault category it hardens;
# categories not listed here follow alphabetically.
ORDER = (
    "storage",
    "backups",
    "hostile_backups",
    "hostile_sql",
    "verify_gate",
    "s3",
    "hostile_bucket",
    "database",
    "restored_db",
    "locks",
    "process",
    "config",
    "runbook_trust",
    "drill_log",
    "drill_log_trust",
    "tui",
)
HOW_TESTED = """\
Every case runs against real components, never mocks: a private PostgreSQL cluster
(`initdb` + `pg_ctl`, scram passwords over TCP), moto's S3 server over HTTP, the
`preskool-dr` CLI as a child process, the stand-in application (`preskool_dr.demo.standin_app`)
for `app.stop`/`start`/`migrate` and the health URL.

Faults are real too:

- **Full disk**: a small tmpfs mounted on BACKUP_DIR (as root) and, everywhere, a file size
  limit (`RLIMIT_FSIZE`) on the child process, so writes fail with ENOSPC / EFBIG half way.
- **Permissions**: `chmod 000` with the child's CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
  dropped (`setpriv`), so root is refused like any operator; BACKUP_DIR pointing at a file.
- **S3**: an HTTP proxy in front of moto (tests/faults/conftest.py `FaultProxy`) answers 503
  SlowDown / 500 InternalError, delays answers, stalls a download half way, resets the
  connection (RST) or closes it early; it records each request's `Range` header, so a
  resumed download is seen, not assumed. Wrong credentials use moto's own IAM checks.
- **Database**: `pg_ctl stop` before a run, `pg_ctl stop -m immediate` in the middle of
  the load, wrong PGPASSWORD, a DB_USER role that does not exist, three sessions that
  reconnect in a loop while step 5 terminates them, database names with `-`, capitals,
  quotes and `; DROP DATABASE postgres`.
- **Process**: SIGKILL, SIGTERM, SIGINT and SIGHUP sent to the CLI while each long step
  works (download, verify, restore, health wait), then `--resume`; a second run on the
  same target; a lock file left by a dead process; app commands that hang past their
  timeout, fail or print 200,000 lines; health URLs that answer 500, never answer, or are
  not there.
- **Input**: malformed runbook.yaml (each error checked for its file:line), missing
  environment, unknown step ids, damaged run journals, file names and psql output that
  are not UTF-8 (on a strict UTF-8 terminal).
- **Drill log**: two processes appending at once, SIGKILL while appending, a write cut
  short by a file size limit.
- **TUI**: Textual's Pilot (`App.run_test`) drives the real app through the steps on the
  private cluster: the terminal resized to 40x12 and back (`pilot.resize_terminal`) while
  step 6 loads, SIGHUP delivered to the process mid-load and the next TUI resuming the run,
  an app command that prints 200,000 lines and 200,000 log events posted from a thread.

Cases wait for what they need (an output line, a request at the proxy, the blocked
statement in `pg_stat_activity`, bytes in a `.part`) and never assert on time. A long step
is held in progress deterministically: the download stalls at the proxy, the backup's bytes
come through a named pipe that stops half way (step 4), the SQL waits in a `DO` loop for a
marker database (step 6), the health URL answers 503 (step 9).

Each case checks: the documented exit code; one error line that says what happened and
what to do next; production untouched (the app never stopped, the database unchanged) or
recoverable (the old database kept aside, the run resumable); no partial file under a
final backup name; no secret (PGPASSWORD, AWS secret key) in any output, journal, backup or
log file.
"""


@dataclass
class Case:
    nodeid: str
    module: str
    doc: str
    variant: str
    outcome: str = "not run"
    seconds: float = 0.0
    detail: str = ""


@dataclass
class Category:
    name: str
    title: str
    guarantee: str
    path: str
    cases: list[Case] = field(default_factory=list)


def _paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in inspect.cleandoc(text).split("\n\n") if p.strip()]


class Recorder:
    """A pytest plugin that keeps each case's docstring, parameters and outcome."""

    def __init__(self) -> None:
        self.cases: dict[str, Case] = {}
        self.modules: dict[str, ModuleType] = {}

    def pytest_collection_finish(self, session: Any) -> None:
        for item in session.items:  # what runs, after -k/-m deselection
            module = item.module
            name = Path(str(module.__file__)).stem.removeprefix("test_")
            self.modules[name] = module
            doc = _paragraphs(item.function.__doc__ or item.name)[0]
            callspec = getattr(item, "callspec", None)
            self.cases[item.nodeid] = Case(item.nodeid, name, doc, callspec.id if callspec else "")

    def pytest_runtest_logreport(self, report: Any) -> None:
        case = self.cases.get(report.nodeid)
        if case is None:
            return
        case.seconds += report.duration
        if report.failed:
            case.outcome = "FAIL" if report.when == "call" else f"ERROR ({report.when})"
            case.detail = _first_line(report.longreprtext)
        elif report.skipped and case.outcome in ("not run", "pass"):
            case.outcome = "skipped"
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
            case.detail = str(reason).removeprefix("Skipped: ")
        elif report.when == "call" and report.passed and case.outcome == "not run":
            case.outcome = "pass"


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("E ")]
    return (lines[0][2:].strip() if lines else text.strip().splitlines()[-1:] or [""])[0][:200]


def categories(recorder: Recorder) -> list[Category]:
    found: dict[str, Category] = {}
    for name, module in recorder.modules.items():
        paragraphs = _paragraphs(module.__doc__ or name)
        guarantee = next((p for p in paragraphs if p.startswith("Guarantee:")), "")
        path = Path(str(module.__file__)).resolve().relative_to(REPO).as_posix()
        guarantee = guarantee.removeprefix("Guarantee: ")
        found[name] = Category(name, paragraphs[0], guarantee[:1].upper() + guarantee[1:], path)
    for case in recorder.cases.values():
        found[case.module].cases.append(case)
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(found.values(), key=lambda c: (rank.get(c.name, len(ORDER)), c.name))


def _tool_version(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "not installed"
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    return (result.stdout or result.stderr).strip().splitlines()[0]


def _label(name: str) -> str:
    special = {"s3": "S3", "tui": "TUI", "hostile_sql": "Hostile SQL"}
    return special.get(name, name.replace("_", " ").capitalize())


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render(cats: list[Category], exit_code: int, seconds: float, args: list[str]) -> str:
    cases = [c for cat in cats for c in cat.cases]
    counts = {o: sum(1 for c in cases if c.outcome == o) for o in ("pass", "skipped")}
    failed = len(cases) - counts["pass"] - counts["skipped"]
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    verdict = "all passed" if failed == 0 and exit_code == 0 else f"{failed} FAILED"
    extra = f" with `{' '.join(args)}`" if args else ""
    out = [
        "# Reliability under faults",
        "",
        "<!-- Generated by scripts/reliability_report.py from a run of tests/faults; "
        "do not edit by hand. -->",
        "",
        f"Latest run: {when}{extra}: **{len(cases)} cases, {verdict}** "
        f"({counts['pass']} passed, {failed} failed, {counts['skipped']} skipped) in "
        f"{seconds / 60:.1f} min, on {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, {_tool_version(['psql', '--version'])}, "
        f"running as {'root' if os.geteuid() == 0 else 'an unprivileged user'}.",
        "",
        "Regenerate: `.venv/bin/python scripts/reliability_report.py`. The suite also runs "
        "in `make test` (it lives under `tests/`).",
        "",
        "## What preskool-dr guarantees",
        "",
    ]
    for cat in cats:
        out += [f"### {_label(cat.name)}", "", cat.guarantee or "(no guarantee stated)", ""]
    out += ["## How it is tested", "", HOW_TESTED.rstrip(), "", "## Cases", ""]
    for cat in cats:
        passed = sum(1 for c in cat.cases if c.outcome == "pass")
        out += [
            f"### {_label(cat.name)} ({passed}/{len(cat.cases)} passed)",
            "",
            f"{cat.title} (`{cat.path}`)",
            "",
            "| Case | Variant | Result | Time |",
            "|---|---|---|---|",
        ]
        for case in cat.cases:
            result = case.outcome + (f": {_cell(case.detail)}" if case.detail else "")
            out.append(
                f"| {_cell(case.doc)} | {_cell(case.variant) or '-'} | {result} | "
                f"{case.seconds:.1f} s |"
            )
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write")
    options, pytest_args = parser.parse_known_args(argv)
    os.chdir(REPO)
    recorder = Recorder()
    started = time.monotonic()
    code = int(pytest.main([str(SUITE), "-q", "-p", "no:cacheprovider", *pytest_args],
                           plugins=[recorder]))  # fmt: skip
    text = render(categories(recorder), code, time.monotonic() - started, pytest_args)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {options.output}")
    return code


if __name__ == "__main__":
    sys.exit(main())
