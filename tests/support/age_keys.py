"""age keys for the encryption tests, made with the stock tools (`age-keygen`, ssh-keygen),
and runbooks that encrypt to them. The stock `age` binary (Debian package `age`, installed
by `make postgres` as root) is what an operator decrypts with by hand: tests use it."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.runbook import write_runbook


def need_age() -> None:
    """Skip (saying why) where the stock age tools are not installed."""
    if shutil.which("age") is None or shutil.which("age-keygen") is None:
        pytest.skip("the stock `age` tool is not installed: apt-get install age (as root)")


@dataclass(frozen=True)
class AgeKey:
    identity: Path  # the secret key file, as `age-keygen -o` writes it
    recipient: str  # its public key, age1...


def make_key(folder: Path, name: str = "key.txt") -> AgeKey:
    need_age()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    public = subprocess.run(
        ["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True
    ).stdout.strip()
    return AgeKey(path, public)


def encrypting_runbook(folder: Path, *recipients: str, **sections: dict) -> Path:
    """A copy of the repo's runbook with `encryption.recipients` (set it in effect with
    PRESKOOL_DR_RUNBOOK)."""
    return write_runbook(folder, encryption={"recipients": list(recipients)}, **sections)


def age_decrypt(path: Path, key: AgeKey) -> bytes:
    """`age -d -i KEY F | gunzip -c`, with the stock binary: what an operator runs by hand."""
    need_age()
    ciphertext = subprocess.run(
        ["age", "-d", "-i", str(key.identity), str(path)], check=True, capture_output=True
    ).stdout
    return gzip.decompress(ciphertext)
