"""`preskool-dr --print-completion bash|zsh`: the shell completion script, generated from the
parser itself by shtab (so it knows every command and option there is, and cannot drift).

shtab is imported only when a script is asked for: `wal-push`, which PostgreSQL runs once
per WAL segment, builds the same top-level parser and should not pay for it."""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

SHELLS = ("bash", "zsh")
OPTION = "--print-completion"
# metavars that name a folder rather than a file
_FOLDER_METAVARS = {"DIR", "D"}

INSTALL_HELP = """\
shell completion (bash, zsh):
  preskool-dr --print-completion bash | sudo tee /usr/share/bash-completion/completions/preskool-dr
  preskool-dr --print-completion bash > ~/.local/share/bash-completion/completions/preskool-dr
  preskool-dr --print-completion zsh > ~/.zfunc/_preskool-dr   (with fpath=(~/.zfunc $fpath)
                                                                 before compinit in ~/.zshrc)
  then open a new shell. docs/CLI.md: every command, option, exit code and file.
"""


class PrintCompletion(argparse.Action):
    """Print the completion script for the chosen shell, then exit 0 (like --version)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("default", argparse.SUPPRESS)
        super().__init__(option_strings, dest, choices=SHELLS, metavar="{bash,zsh}", **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(completion_script(parser, str(values)), end="")
        parser.exit(0)


def add_completion_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        OPTION,
        action=PrintCompletion,
        help="print the shell completion script for bash or zsh and exit "
        "(how to install it: below)",
    )


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """shtab's script for `shell`, with files and folders completed where a path goes."""
    import shtab

    for action in _actions(parser):
        if getattr(action, "complete", None) is None and _takes_a_path(action):
            folder = str(action.metavar) in _FOLDER_METAVARS
            action.complete = shtab.DIRECTORY if folder else shtab.FILE  # type: ignore[attr-defined]
    script: str = shtab.complete(parser, shell=shell)
    return script if script.endswith("\n") else script + "\n"


def _takes_a_path(action: argparse.Action) -> bool:
    return action.type is Path or str(action.metavar) in {"PATH", "FILE", "DEST", *_FOLDER_METAVARS}


def _actions(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases: once each
                yield from _actions(child)
