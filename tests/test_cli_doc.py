"""docs/CLI.md is the outside contract in the repository: every command and every long
option the parser knows has its place there, so the page cannot fall behind the code."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

from preskool_dr.cli.main import build_parser
from preskool_dr.core.base.schedule import seed_jobs

CLI_DOC = Path(__file__).resolve().parent.parent / "docs" / "CLI.md"
HEADING = re.compile(r"^### `preskool-dr ([a-z -]+)`$", re.MULTILINE)


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser below `parser` with its command path, leaves and groups alike."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*path, name), child
                yield from commands(child, (*path, name))


def long_options(parser: argparse.ArgumentParser) -> list[str]:
    return [
        option
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    ]


def has_subcommands(parser: argparse.ArgumentParser) -> bool:
    return any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)


def sections(text: str) -> dict[str, str]:
    """`### \\`preskool-dr NAME\\`` heading -> the text up to the next heading."""
    marks = list(HEADING.finditer(text))
    ends = [m.start() for m in marks[1:]] + [len(text)]
    return {m.group(1): text[m.end() : end] for m, end in zip(marks, ends, strict=True)}


def test_every_command_has_a_section_that_names_each_of_its_long_options() -> None:
    text = CLI_DOC.read_text(encoding="utf-8")
    documented = sections(text)
    missing = []
    for path, parser in commands(build_parser()):
        if has_subcommands(parser):  # `config`, `drill-log`, `schedule`: their actions
            continue
        name = " ".join(path)
        section = documented.get(name)
        if section is None:
            missing.append(f"no section `### \\`preskool-dr {name}\\``")
            continue
        missing += [
            f"{name}: {option}"
            for option in long_options(parser)
            if not re.search(rf"`{re.escape(option)}[` ]", section)
        ]
    assert missing == []


def test_every_global_option_is_in_the_global_options_table() -> None:
    text = CLI_DOC.read_text(encoding="utf-8")
    table = text[text.index("## Global options") : text.index("## Exit codes")]
    missing = [o for o in long_options(build_parser()) if f"`{o}" not in table]
    assert missing == []


def test_no_section_documents_a_command_that_does_not_exist() -> None:
    known = {" ".join(path) for path, _ in commands(build_parser())}
    stale = set(sections(CLI_DOC.read_text(encoding="utf-8"))) - known
    assert stale == set()


def test_the_helper_finds_what_a_page_leaves_out() -> None:
    """The check itself: a section without one of its options is caught."""
    page = "### `preskool-dr list`\n| `--json` | records |\n"
    assert set(sections(page)) == {"list"}
    assert not re.search(r"`--source[` ]", sections(page)["list"])


CRON_LINE = re.compile(r"^\s+((?:\S+ ){4}\S+)\s+preskool-dr ([a-z -]+?)\s*(?:>>|$)", re.MULTILINE)


def test_cron_lines_in_every_help_match_the_seed_schedule() -> None:
    """A cron line shown in any `--help` runs its command at the time `schedule` installs."""
    seed = {" ".join(job.args): job.when.cron_fields() for job in seed_jobs()}
    shown = []
    for path, parser in [((), build_parser()), *commands(build_parser())]:
        for when, command in CRON_LINE.findall(parser.format_help()):
            shown.append(command)
            if command in seed:
                assert when == seed[command], f"`{' '.join(path)} --help`: {command}"
    assert {"backup", "backup --kind weekly", "restore-test"} <= set(shown)
