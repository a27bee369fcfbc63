"""Start-up: building the command line (`--help`, completion, dispatch) imports none of
the heavy libraries; each command imports what it needs when it runs."""

from __future__ import annotations

import subprocess
import sys

from preskool_dr.cli.args.backup import LOGICAL_KINDS
from preskool_dr.cli.args.demo import DEMO_SCALE
from preskool_dr.cli.args.list import SOURCES
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
