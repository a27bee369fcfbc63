"""SSH signatures for the drill log, made and checked by `ssh-keygen -Y` itself.

Using the stock tool (not a crypto library) means anyone can re-check a drill record with
nothing but OpenSSH: `ssh-keygen -Y verify -f allowed_signers -I SIGNER -n preskool-dr-drill
-s SIGFILE < CANONICAL`. A key comes from a file (`--sign-key`, `drill.sign_key`) or from
the ssh-agent. A passphrase-protected key file needs the operator's terminal: callers pass
`interactive=True` only while the terminal is theirs (the TUI suspends itself first).
"""

from __future__ import annotations

import os
import pwd
import re
import stat
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from preskool_dr.core.base.errors import DrError, UsageError
from preskool_dr.core.base.procs import run_command, spawn, terminate
from preskool_dr.core.drill.names import NAMESPACE

SSH_KEYGEN = "ssh-keygen"
TIMEOUT_SECONDS = 60.0
_KEY_TYPES = ("ssh-", "ecdsa-", "sk-")
_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/=]+")
_NEVER_ASK = {"SSH_ASKPASS_REQUIRE": "never"}


class SigningError(DrError):
    """ssh-keygen could not make a signature; the message says why and what to do."""


@dataclass(frozen=True)
class SigningKey:
    """Where a signature comes from: a private key file, or a key held by the ssh-agent."""

    path: Path | None = None
    agent_public_key: str | None = None  # one line of `ssh-add -L`

    def describe(self) -> str:
        if self.path is not None:
            return f"key file {self.path}"
        parts = (self.agent_public_key or "?").split()
        # `ssh-add -L` lines are "TYPE BASE64 [COMMENT]": the comment names the key best.
        return f"ssh-agent key {' '.join(parts[2:]) or parts[0]}"


@dataclass(frozen=True)
class SignatureCheck:
    """The outcome of checking one signature against allowed_signers."""

    ok: bool
    reason: str = ""  # why not, in words; empty when ok
    kind: str = ""  # "tampered" or "untrusted" when not ok
    fingerprint: str | None = None  # the signing key, when ssh-keygen named it


@dataclass(frozen=True)
class TrustRoot:
    """The allowed_signers file that decides whose signature counts, and who named it."""

    path: Path
    source: str  # "--allowed-signers" or "drill.allowed_signers in <runbook>"

    def describe(self) -> str:
        return f"{self.path} (from {self.source})"


def trust_root(path: Path, source: str) -> TrustRoot:
    """An allowed_signers file verification may trust, or UsageError saying why not.

    Whoever can write the file decides whose signatures are valid, so it must be writable
    only by its owner, and that owner must be the user running preskool-dr or root.
    """
    path = path.expanduser()
    try:
        info = path.stat()
    except FileNotFoundError:
        raise UsageError(
            f"allowed signers file {path} (from {source}) does not exist: create it with one "
            f'line per signer, e.g. `alice namespaces="{NAMESPACE}" ssh-ed25519 AAAA...`'
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot read allowed signers file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"allowed signers file {path} (from {source}) is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        raise UsageError(
            f"refusing allowed signers file {path} (from {source}): it is writable by "
            f"group or others (mode {mode:04o}), so anyone who can write it decides whose "
            f"signatures count; run `chmod go-w {path}` if its content is right"
        )
    if info.st_uid not in (0, os.geteuid()):
        raise UsageError(
            f"refusing allowed signers file {path} (from {source}): it belongs to "
            f"{_user_name(info.st_uid)}, neither you nor root, who could change whose "
            "signatures count; keep it in a file owned by you or root"
        )
    return TrustRoot(path, source)


def _user_name(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


@dataclass(frozen=True)
class _Output:
    returncode: int
    text: str


def key_from_file(path: Path) -> SigningKey:
    path = path.expanduser()
    if not path.is_file():
        raise UsageError(
            f"signing key {path} does not exist: pass --sign-key with a private key file "
            "(e.g. ~/.ssh/id_ed25519) or load the key into ssh-agent"
        )
    return SigningKey(path=path)


def agent_key() -> SigningKey | None:
    """The first key the running ssh-agent offers, or None without an agent or keys."""
    if not os.environ.get("SSH_AUTH_SOCK"):
        return None
    result = run_command(["ssh-add", "-L"], timeout=TIMEOUT_SECONDS)
    if not result.ok:
        return None
    for line in result.output.splitlines():
        if line.startswith(_KEY_TYPES):
            return SigningKey(agent_public_key=line.strip())
    return None


def resolve_key(explicit: Path | None, configured: Path | None) -> SigningKey | None:
    """`--sign-key`, else runbook `drill.sign_key`, else the ssh-agent, else None."""
    if explicit is not None:
        return key_from_file(explicit)
    if configured is not None:
        return key_from_file(configured)
    return agent_key()


def sign(data: bytes, key: SigningKey, *, interactive: bool = False) -> str:
    """An armored `-----BEGIN SSH SIGNATURE-----` over `data` in the drill namespace.

    interactive=True runs ssh-keygen on the caller's terminal so it can ask for a
    passphrase; otherwise it never prompts and a passphrase-protected key fails.
    """
    with tempfile.TemporaryDirectory(prefix="preskool-dr-sign-") as tmp:
        message = Path(tmp) / "entry.json"
        message.write_bytes(data)
        argv = [SSH_KEYGEN, "-Y", "sign", "-n", NAMESPACE]
        if key.path is not None:
            argv += ["-f", str(key.path)]
        else:
            public = Path(tmp) / "agent-key.pub"
            public.write_text(f"{key.agent_public_key}\n", encoding="utf-8")
            argv += ["-U", "-f", str(public)]
        argv.append(str(message))
        # Without a terminal (cron, a pipe) "interactive" would have nowhere to ask.
        asked = interactive and _has_terminal()
        result = _run(argv, interactive=asked)
        signature = Path(f"{message}.sig")
        if result.returncode == 0 and signature.is_file():
            return signature.read_text(encoding="ascii")
    raise SigningError(_signing_failure(key, result, asked))


def _signing_failure(key: SigningKey, result: _Output, asked: bool) -> str:
    text = result.text
    what = key.describe()
    if result.returncode == 127:
        return f"cannot sign: {SSH_KEYGEN} is not installed (install openssh-client)"
    if "passphrase" in text and asked:
        return f"cannot sign with {what}: wrong passphrase"
    if "passphrase" in text and key.path is not None:
        return (
            f"cannot sign with {what}: it is protected by a passphrase and no terminal "
            f"was available to ask for it; load it into ssh-agent (`ssh-add {key.path}`) "
            "or sign from a terminal"
        )
    if key.path is None and ("agent" in text or "Couldn't" in text):
        return f"cannot sign with {what}: the ssh-agent refused ({_last_line(text)})"
    return f"cannot sign with {what}: ssh-keygen said: {_last_line(text)}"


def verify(data: bytes, signature: str, *, signer: str, allowed_signers: Path) -> SignatureCheck:
    """Check `signature` over `data` for principal `signer`; say precisely why not."""
    with tempfile.TemporaryDirectory(prefix="preskool-dr-verify-") as tmp:
        message = Path(tmp) / "entry.json"
        message.write_bytes(data)
        sig = Path(tmp) / "entry.json.sig"
        sig.write_text(signature, encoding="utf-8")
        checked = _run(
            [SSH_KEYGEN, "-Y", "verify", "-f", str(allowed_signers), "-I", signer,
             "-n", NAMESPACE, "-s", str(sig)],
            stdin_path=message,
        )  # fmt: skip
        if checked.returncode == 0:
            return SignatureCheck(ok=True, fingerprint=_fingerprint(checked.text))
        # Not good for this signer: is the signature itself broken, or just not trusted?
        genuine = _check_novalidate(message, sig)
        if not genuine.ok:
            return genuine
        fingerprint = genuine.fingerprint
        found = _run(
            [SSH_KEYGEN, "-Y", "find-principals", "-f", str(allowed_signers), "-s", str(sig)]
        )
        principals = found.text.split() if found.returncode == 0 else []
        if not principals:
            reason = (
                f"signed by key {fingerprint or '?'}, which is not in {allowed_signers} "
                f"(for namespace {NAMESPACE})"
            )
        elif signer not in principals:
            reason = (
                f"signed by the key of {', '.join(principals)} in {allowed_signers}, "
                f"but the line names signer {signer!r}"
            )
        else:
            reason = (
                f"the key of {signer!r} in {allowed_signers} is not valid for namespace "
                f"{NAMESPACE} or has expired"
            )
        return SignatureCheck(ok=False, kind="untrusted", reason=reason, fingerprint=fingerprint)


def check_content(data: bytes, signature: str) -> SignatureCheck:
    """Without a trust root: does `signature` match `data`, and by which key?

    This proves the line was not changed after that key signed it, not that the key is
    anyone's in particular (anyone can make a key and re-sign an edited line), so callers
    report the key's fingerprint and never call the result "valid".
    """
    with tempfile.TemporaryDirectory(prefix="preskool-dr-verify-") as tmp:
        message = Path(tmp) / "entry.json"
        message.write_bytes(data)
        sig = Path(tmp) / "entry.json.sig"
        sig.write_text(signature, encoding="utf-8")
        return _check_novalidate(message, sig)


def _check_novalidate(message: Path, sig: Path) -> SignatureCheck:
    checked = _run(
        [SSH_KEYGEN, "-Y", "check-novalidate", "-n", NAMESPACE, "-s", str(sig)],
        stdin_path=message,
    )
    if checked.returncode != 0:
        return SignatureCheck(
            ok=False,
            kind="tampered",
            reason="the signature does not match the line's content: "
            "the line was changed after it was signed (or the signature is damaged)",
        )
    return SignatureCheck(ok=True, fingerprint=_fingerprint(checked.text))


def _run(
    argv: Sequence[str], *, stdin_path: Path | None = None, interactive: bool = False
) -> _Output:
    """ssh-keygen with its messages captured.

    Captured runs never prompt: own session (no /dev/tty), stdin closed, no GUI askpass.
    An interactive run stays in our session with our stdin, so ssh-keygen asks for the
    passphrase on /dev/tty with echo off; it is not timed (a person is typing).
    """
    try:
        if interactive:
            proc = spawn(argv, stdin=sys.stdin, stderr=subprocess.STDOUT, new_session=False)
        elif stdin_path is None:
            proc = spawn(argv, stderr=subprocess.STDOUT, env=_NEVER_ASK)
        else:
            with stdin_path.open("rb") as stdin:
                proc = spawn(argv, stdin=stdin, stderr=subprocess.STDOUT, env=_NEVER_ASK)
    except OSError as exc:
        return _Output(127, f"cannot start {argv[0]}: {exc.strerror}")
    try:
        out, _ = proc.communicate(timeout=None if interactive else TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        terminate(proc)
        return _Output(124, f"{argv[0]} did not finish within {TIMEOUT_SECONDS:.0f} s")
    except BaseException:  # Ctrl-C at the passphrase prompt
        terminate(proc)
        raise
    return _Output(proc.returncode, out.decode("utf-8", "replace"))


def _has_terminal() -> bool:
    try:
        os.close(os.open("/dev/tty", os.O_RDWR))
    except OSError:
        return False
    return True


def _fingerprint(text: str) -> str | None:
    match = _FINGERPRINT.search(text)
    return match.group(0) if match else None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
