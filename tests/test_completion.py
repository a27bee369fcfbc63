"""`preskool-dr --print-completion bash|zsh`: shtab's scripts, generated from the parser."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from preskool_dr.cli.main import COMMAND_MODULES, build_parser
from tests.support.cli import call_cli

COMMANDS = ("backup", "restore-test", "drill-log", "wal-push", "pitr", "schedule", "init")


def complete_in_bash(script: Path, *words: str) -> list[str]:
    """What bash offers after `preskool-dr WORDS` (the last word being completed)."""
    line = " ".join(("preskool-dr", *words))
    program = (
        f"source {script}\n"
        f"COMP_WORDS=(preskool-dr {' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words)}\n"
        f"COMP_LINE={line!r}; COMP_POINT=${{#COMP_LINE}}\n"
        "_shtab_preskool_dr\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.split()


def test_bash_script_is_valid_bash_and_completes_commands_and_options(tmp_path: Path) -> None:
    done = call_cli("--print-completion", "bash")
    assert done.returncode == 0, done.stderr
    script = tmp_path / "preskool-dr.bash"
    script.write_text(done.stdout)
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    assert "complete -o bashdefault -F _shtab_preskool_dr preskool-dr" in done.stdout
    for command in COMMANDS:
        assert command in done.stdout
    assert complete_in_bash(script, "rest") == ["restore-test", "restore"]
    assert complete_in_bash(script, "restore", "--drop-a") == ["--drop-aside", "--drop-after"]
    assert complete_in_bash(script, "schedule", "print", "") == ["systemd", "cron"]


def test_zsh_script_is_produced_and_names_every_command(tmp_path: Path) -> None:
    done = call_cli("--print-completion", "zsh")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("#compdef preskool-dr\n")
    for command in COMMANDS:
        assert f"{command}:" in done.stdout
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip("zsh is not installed: the script was produced, its syntax not checked")
    script = tmp_path / "_preskool-dr"
    script.write_text(done.stdout)
    syntax = subprocess.run([zsh, "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


def test_only_bash_and_zsh_are_offered() -> None:
    done = call_cli("--print-completion", "fish")
    assert done.returncode == 2
    assert "invalid choice: 'fish'" in done.stderr


def test_help_says_how_to_install_it() -> None:
    text = build_parser(COMMAND_MODULES).format_help()
    assert "--print-completion {bash,zsh}" in text
    assert "bash-completion/completions/preskool-dr" in text
    assert "~/.zfunc/_preskool-dr" in text


def test_wal_push_does_not_import_shtab() -> None:
    """PostgreSQL runs wal-push once per segment: the completion library stays unloaded."""
    program = (
        "import sys\n"
        "from preskool_dr.cli.main import build_parser, PER_SEGMENT_COMMANDS\n"
        "build_parser(tuple(set(PER_SEGMENT_COMMANDS.values())))\n"
        "print('shtab' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout.strip() == "False", done.stderr
