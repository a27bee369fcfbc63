"""Start-up: building the command line (`--help`, completion, dispatch) imports none of
the heavy libraries; each command imports what it needs when it runs."""

from __future__ import annotations

import argparse
import subprocess
import sys

from preskool_dr.cli.args.backup import LOGICAL_KINDS
from preskool_dr.cli.args.demo import DEMO_SCALE
from preskool_dr.cli.args.list import SOURCES
from preskool_dr.cli.main import COMMAND_PARSERS, build_parser
from preskool_dr.core.backup import logical
from preskool_dr.core.storage import catalog
from preskool_dr.demo import sandbox

HEAVY = ("textual", "boto3", "botocore", "psycopg", "apprise", "pyrage", "shtab", "yaml")

PROBE = """
import sys
{code}
heavy = {heavy!r}
print(" ".join(sorted({{m for m in sys.modules if m.split(".")[0] in heavy}})))
"""


def _loaded(code: str) -> str:
    """The heavy modules a fresh interpreter holds after running `code`."""
    probe = PROBE.format(code=code, heavy=HEAVY)
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout.strip()


def test_importing_the_cli_loads_no_heavy_library() -> None:
    assert _loaded("import preskool_dr.cli.main") == ""


def test_building_every_parser_loads_no_heavy_library() -> None:
    """What `preskool-dr --help` and `preskool-dr COMMAND --help` do."""
    code = "from preskool_dr.cli.main import build_parser\nbuild_parser().format_help()"
    assert _loaded(code) == ""


def test_check_loads_neither_the_engine_nor_s3_nor_psycopg() -> None:
    """`check` runs every few minutes from cron/Nagios: its own module stays light."""
    assert _loaded("import preskool_dr.cli.check_cmd") == ""


def test_the_parsers_copies_of_core_constants_match() -> None:
    assert LOGICAL_KINDS == logical.LOGICAL_KINDS
    assert SOURCES == catalog.SOURCES
    assert DEMO_SCALE == sandbox.DEMO_SCALE


def _command_names(parser: argparse.ArgumentParser) -> set[str]:
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(subparsers.choices)


def test_each_command_name_builds_the_parser_that_registers_it() -> None:
    """main() builds only the parser a command line names: the map must match."""
    assert set(COMMAND_PARSERS) == _command_names(build_parser())
    for name, module in COMMAND_PARSERS.items():
        assert name in _command_names(build_parser((module,)))


def test_a_command_alone_parses_as_with_every_parser() -> None:
    argv = ["check", "--json", "--prometheus", "/tmp/x.prom"]
    alone = build_parser((COMMAND_PARSERS["check"],)).parse_args(argv)
    full = build_parser().parse_args(argv)
    assert vars(alone).keys() == vars(full).keys()
    assert {k: v for k, v in vars(alone).items() if k != "handler"} == {
        k: v for k, v in vars(full).items() if k != "handler"
    }
    assert alone.handler.__name__ == full.handler.__name__ == "check_cmd.run"


def test_a_restore_from_a_local_file_loads_neither_boto3_nor_the_drill_code() -> None:
    """boto3 loads when a backup is listed or fetched from S3; the drill's sign-off (and
    with it PITR) only for a drill. psycopg is what a restore needs."""
    loaded = _loaded(
        "import preskool_dr.cli.restore_cmd\n"
        "assert 'preskool_dr.core.drill.record' not in sys.modules\n"
        "assert 'preskool_dr.core.pitr.run' not in sys.modules"
    )
    assert {name.split(".")[0] for name in loaded.split()} == {"psycopg"}
