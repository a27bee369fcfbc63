"""MD5 sidecars: exactly what `md5sum F > F.md5` writes (`<32 hex>  <basename>\\n`), so an
operator without this tool can still run `md5sum --check F.md5` inside the folder."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from preskool_dr.core.base.errors import DrError, VerificationError
from preskool_dr.core.base.files import PRIVATE_FILE_MODE, atomic_write

SIDECAR_SUFFIX = ".md5"
# Patterns are used with fullmatch: `$` also matches before a trailing newline.
_MD5_RE = re.compile(r"[0-9a-fA-F]{32}")
# GNU text/binary form `<hex>  <name>` / `<hex> *<name>`, and the BSD `--tag` form.
_GNU_LINE = re.compile(r"(?P<md5>[0-9a-fA-F]{32}) [ *](?P<name>.+)")
_BSD_LINE = re.compile(r"MD5 \((?P<name>.+)\) = (?P<md5>[0-9a-fA-F]{32})")


@dataclass(frozen=True)
class Sidecar:
    md5: str  # 32 lowercase hex
    filename: str  # the basename the sidecar names


def sidecar_path(backup: Path) -> Path:
    """`F.md5` beside `F`."""
    return backup.with_name(backup.name + SIDECAR_SUFFIX)


def md5_hasher() -> hashlib._Hash:
    # MD5 here is an integrity check the runbook and md5sum share, not a security control.
    return hashlib.md5(usedforsecurity=False)


def write_sidecar(backup: Path, md5: str, *, mode: int = PRIVATE_FILE_MODE) -> Path:
    """Write `<md5>  <basename>\\n` atomically (temp + fsync + rename); returns its path."""
    path = sidecar_path(backup)
    _install_sidecar(path, backup.name, md5, mode, overwrite=True)
    return path


def create_sidecar(backup: Path, md5: str, *, mode: int = PRIVATE_FILE_MODE) -> bool:
    """`write_sidecar`, but never over an existing sidecar: False (and nothing written) when
    `backup`'s sidecar already exists, e.g. put there by another process a moment ago."""
    return _install_sidecar(sidecar_path(backup), backup.name, md5, mode, overwrite=False)


def _install_sidecar(path: Path, name: str, md5: str, mode: int, *, overwrite: bool) -> bool:
    if not _MD5_RE.fullmatch(md5):
        raise ValueError(f"not an MD5 digest: {md5!r}")
    try:
        return atomic_write(path, f"{md5.lower()}  {name}\n".encode(), mode, overwrite=overwrite)
    except OSError as exc:
        raise DrError(f"cannot write checksum file {path}: {exc.strerror or exc}") from None


def read_sidecar(path: Path, expected_name: str | None = None) -> Sidecar:
    """Parse a sidecar; VerificationError when malformed or naming another file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise VerificationError(
            f"checksum file {path} is missing: the backup cannot be verified; "
            "fetch the .md5 beside it (it is uploaded with every backup)"
        ) from None
    except OSError as exc:
        raise VerificationError(
            f"cannot read checksum file {path}: {exc.strerror or exc}"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise VerificationError(f"checksum file {path} is not text: it is damaged") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise VerificationError(
            f"checksum file {path} must hold exactly one `<md5>  <file name>` line, "
            f"found {len(lines)}"
        )
    line = lines[0].rstrip("\r")
    match = _GNU_LINE.fullmatch(line) or _BSD_LINE.fullmatch(line)
    if match is None:
        raise VerificationError(
            f"checksum file {path} is malformed: expected `<32 hex digits>  <file name>`"
        )
    sidecar = Sidecar(md5=match["md5"].lower(), filename=match["name"])
    if expected_name is not None and sidecar.filename != expected_name:
        raise VerificationError(
            f"checksum file {path} is for {sidecar.filename!r}, not {expected_name!r}: "
            "it belongs to another backup"
        )
    return sidecar


def expected_md5(backup: Path) -> tuple[str | None, str | None]:
    """The MD5 `backup`'s sidecar promises (lower case), or None and why there is none
    (missing, malformed, naming another file)."""
    try:
        return read_sidecar(sidecar_path(backup), expected_name=backup.name).md5.lower(), None
    except VerificationError as exc:
        return None, str(exc)
