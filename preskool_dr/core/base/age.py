"""age encryption (https://age-encryption.org) through pyrage: recipients from the runbook,
identities from a file, and streams that encrypt or decrypt as the bytes go by.

No clear text is ever written to disk here: `Encryptor` hands ciphertext to a sink as it is
produced; `Decryptor` hands clear text to its reader a chunk at a time, and `decrypt_to`
pushes it to a callable. What comes out is what `age -d -i KEY F` gives, so an operator
without this tool can always decrypt by hand with the stock `age` binary.

pyrage's streaming calls (`encrypt_io`/`decrypt_io`) pull from a reader and push to a
writer until the end; the backup produces data and the restore consumes it, so each runs
pyrage on a thread of its own, joined by a small bounded queue (memory stays flat).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from preskool_dr.core.base.errors import DrError, UsageError

AGE_SUFFIX = ".age"
AGE_HEADER = b"age-encryption.org/v1\n"
IDENTITY_ENV = "PRESKOOL_DR_AGE_IDENTITY"
HOW_TO_PASS = f"pass --identity FILE (or set {IDENTITY_ENV} to the file's path)"
# pyrage is imported in the functions that use it: loading the runbook (which checks
# recipients only when encryption is on) and `check` never load it.
_QUEUED = 8  # chunks waiting between the producer and pyrage's thread
_IDENTITY_MAX_BYTES = 1 << 20
_PIECE = 1 << 20  # clear bytes handed on at once


class DecryptionError(DrError):
    """The bytes could not be decrypted. `wrong_key`: no identity matches any recipient of
    the file (the file may be fine); otherwise the ciphertext is damaged or cut short."""

    def __init__(self, message: str, *, wrong_key: bool) -> None:
        super().__init__(message)
        self.wrong_key = wrong_key


class IdentityMissing(DrError):
    """An encrypted backup and no usable identity: the message says what to pass."""


# ---------------------------------------------------------------- recipients


def recipient_problem(text: str) -> str | None:
    """Why `text` is not an age recipient this tool can encrypt to, or None."""
    try:
        parse_recipient(text)
    except ValueError as exc:
        return str(exc)
    return None


def parse_recipient(text: str) -> Any:
    """An age X25519 recipient (`age1...`) or an SSH public key (`ssh-ed25519 AAAA...`,
    `ssh-rsa AAAA...`, an authorized_keys line). ValueError saying why not."""
    import pyrage

    text = text.strip()
    try:
        if text.startswith("age1"):
            return pyrage.x25519.Recipient.from_str(text)
        if text.startswith(("ssh-ed25519 ", "ssh-rsa ")):
            return pyrage.ssh.Recipient.from_str(text)
    except pyrage.RecipientError as exc:
        raise ValueError(f"not a valid age recipient ({exc})") from None
    except Exception as exc:  # pyrage raises its own error types for SSH keys
        raise ValueError(f"not a valid age recipient ({exc})") from None
    if text.startswith("AGE-SECRET-KEY-"):
        raise ValueError(
            "this is a secret key (an identity), not a recipient: put its public key "
            "(`age-keygen -y KEYFILE` prints it) in the runbook and keep the secret off this host"
        )
    raise ValueError(
        "not an age recipient: use an age public key (age1..., from `age-keygen`) "
        "or an SSH public key (ssh-ed25519 ... or ssh-rsa ...)"
    )


def recipients(texts: Iterable[str]) -> list[Any]:
    """Every configured recipient, parsed again right before use (fails closed): UsageError
    when there is none or one is not usable, before anything is written."""
    parsed = []
    for number, text in enumerate(texts):
        try:
            parsed.append(parse_recipient(text))
        except ValueError as exc:
            raise UsageError(
                f"encryption.recipients[{number}] is unusable: {exc} - nothing was written; "
                "fix the runbook and run the backup again"
            ) from None
    if not parsed:
        raise UsageError(
            "encryption is configured without recipients - nothing was written; list at "
            "least one under encryption.recipients"
        )
    return parsed


# ---------------------------------------------------------------- identities


def generate_identity(path: Path) -> str:
    """Write a new age identity to `path` (mode 0600, as `age-keygen -o` writes it: the stock
    `age -d -i` reads it) and return its recipient (age1...). Refuses to replace a file."""
    import pyrage

    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    text = f"# public key: {recipient}\n{identity}\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return recipient


def load_identities(path: Path) -> list[Any]:
    """The identities in `path`: an age identity file (`AGE-SECRET-KEY-1...` lines, `#`
    comments, as `age-keygen -o` writes) or an unencrypted SSH private key (ed25519, RSA).
    DrError (exit 1) saying what is wrong and what to pass."""
    import pyrage

    try:
        with path.open("rb") as handle:
            data = handle.read(_IDENTITY_MAX_BYTES + 1)
    except FileNotFoundError:
        raise DrError(f"identity file {path} does not exist: {HOW_TO_PASS}") from None
    except OSError as exc:
        raise DrError(f"cannot read identity file {path}: {exc.strerror or exc}") from None
    if len(data) > _IDENTITY_MAX_BYTES:
        raise DrError(f"{path} is not an age identity file (it is larger than 1 MiB)")
    if b"-----BEGIN" in data:
        try:
            return [pyrage.ssh.Identity.from_buffer(data)]
        except Exception as exc:
            raise DrError(
                f"{path} is not a usable SSH private key for age ({exc}); an SSH key with a "
                "passphrase cannot be used: decrypt with `age -d -i KEY` by hand"
            ) from None
    found = []
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(pyrage.x25519.Identity.from_str(line))
        except Exception:
            raise DrError(
                f"{path} is not an age identity file: a line is neither a comment nor an "
                "AGE-SECRET-KEY-1... key (make one with `age-keygen -o FILE`)"
            ) from None
    if not found:
        raise DrError(f"{path} holds no identity (no AGE-SECRET-KEY-1... line)")
    return found


def need_identities(path: Path | None, what: str) -> list[Any]:
    """The identities for decrypting `what`; DrError telling what to pass when none is set."""
    if path is None:
        raise IdentityMissing(f"{what} is encrypted and no identity was given: {HOW_TO_PASS}")
    try:
        return load_identities(path)
    except DrError as exc:
        raise IdentityMissing(str(exc)) from None


def is_encrypted_name(name: str) -> bool:
    return name.endswith(AGE_SUFFIX)


def identities_for(name: str, identity: Path | None) -> list[Any] | None:
    """The identities that decrypt backup `name`: None when it is not encrypted or no
    identity is configured (verify then checks only the MD5)."""
    if not is_encrypted_name(name) or identity is None:
        return None
    return load_identities(identity)


# ---------------------------------------------------------------- streams


class _QueueReader:
    """The reader pyrage pulls from: bytes put by the producer, b"" at the end."""

    def __init__(self) -> None:
        self.chunks: queue.Queue[bytes | None] = queue.Queue(_QUEUED)
        self._buffer = memoryview(b"")
        self._ended = False
        self.aborted = False

    def read(self, size: int = -1) -> bytes:
        while not self._buffer and not self._ended:
            if self.aborted:
                raise OSError("aborted")
            try:
                chunk = self.chunks.get(timeout=0.1)
            except queue.Empty:
                continue
            if chunk is None:
                self._ended = True
            else:
                self._buffer = memoryview(chunk)
        if self.aborted:
            raise OSError("aborted")
        if size < 0:
            size = len(self._buffer)
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return bytes(out)


class _SinkWriter:
    def __init__(self, sink: Callable[[bytes], object]) -> None:
        self._sink = sink

    def write(self, data: bytes) -> int:
        self._sink(bytes(data))
        return len(data)

    def flush(self) -> None:
        return None


class Encryptor:
    """Bytes written to it come out encrypted to `recipients`, in order, through `sink`
    (called on pyrage's thread). `close()` writes the last chunk and raises what failed."""

    def __init__(self, recipients: Sequence[Any], sink: Callable[[bytes], object]) -> None:
        if not recipients:
            raise UsageError("no age recipient to encrypt to")
        self._reader = _QueueReader()
        self._error: BaseException | None = None
        self._sink = sink
        self._thread = threading.Thread(
            target=self._run, args=(list(recipients), _SinkWriter(self._take)), daemon=True
        )
        self._thread.name = "age-encrypt"
        self._thread.start()

    def _take(self, data: bytes) -> None:
        if self._reader.aborted:  # the file is being thrown away (and its fd closed)
            raise OSError("aborted")
        try:
            self._sink(data)
        except BaseException as exc:  # the sink's own error (a full disk) is the one to raise
            self._error = self._error or exc
            raise

    def _run(self, recipients: list[Any], writer: _SinkWriter) -> None:
        import pyrage

        try:
            pyrage.encrypt_io(self._reader, writer, recipients)
        except BaseException as exc:
            self._error = self._error or exc
            self._drain()

    def _drain(self) -> None:
        """After a failure, keep taking what the producer puts so that it never blocks."""
        while not self._reader.aborted:
            with contextlib.suppress(queue.Empty):
                if self._reader.chunks.get(timeout=0.1) is None:
                    return
            if not threading.main_thread().is_alive():
                return

    def write(self, data: bytes) -> None:
        if self._error is not None:
            self._raise()
        if data:
            self._reader.chunks.put(bytes(data))

    def close(self) -> None:
        self._reader.chunks.put(None)
        self._thread.join()
        if self._error is not None:
            self._raise()

    def abort(self) -> None:
        """Stop without finishing the file (it is being thrown away); once this returns the
        sink is never called again (the caller closes what it writes to)."""
        self._reader.aborted = True
        self._thread.join()

    def _raise(self) -> None:
        error = self._error
        if isinstance(error, DrError | OSError):
            raise error
        raise DrError(f"age encryption failed: {error}") from None


def _decrypt_error(exc: BaseException, name: str) -> DecryptionError:
    text = str(exc)
    if "No matching keys" in text:
        return DecryptionError(
            f"cannot decrypt {name}: the identity given matches none of its recipients "
            f"({text}); {HOW_TO_PASS} with the key that belongs to one of the runbook's "
            "encryption.recipients",
            wrong_key=True,
        )
    return DecryptionError(
        f"{name} does not decrypt: its encrypted data is damaged or cut short ({text})",
        wrong_key=False,
    )


def decrypt_to(
    reader: BinaryIO | Any,
    identities: Sequence[Any],
    sink: Callable[[bytes], object],
    name: str,
) -> int:
    """Decrypt everything `reader` gives, handing the clear text to `sink` as it comes;
    returns the clear bytes. DecryptionError when it cannot (sink's own errors pass)."""
    import pyrage

    produced = 0
    raised: list[BaseException] = []
    pending: list[bytes] = []  # pyrage writes 8 KiB at a time: handed on in ~1 MiB pieces
    held = 0

    def flush() -> None:
        nonlocal held
        if not pending:
            return
        piece = b"".join(pending)
        pending.clear()
        held = 0
        try:
            sink(piece)
        except BaseException as exc:
            raised.append(exc)
            raise

    def take(data: bytes) -> None:
        nonlocal produced, held
        produced += len(data)
        pending.append(data)
        held += len(data)
        if held >= _PIECE:
            flush()

    try:
        pyrage.decrypt_io(reader, _SinkWriter(take), list(identities))
        flush()
    except BaseException as exc:
        if raised:
            raise raised[0] from None
        if isinstance(exc, DrError | KeyboardInterrupt):
            raise
        raise _decrypt_error(exc, name) from None
    return produced


class Decryptor:
    """A file-like object whose `read` gives the clear text of an encrypted file, decrypted
    on a thread as it is read (a bounded queue in between: nothing is written anywhere)."""

    def __init__(self, source: BinaryIO, identities: Sequence[Any], name: str) -> None:
        self._source = source
        self._chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(_QUEUED)
        self._buffer = b""
        self._ended = False
        self._stop = threading.Event()
        self.encrypted_read = 0  # ciphertext bytes read so far (progress)
        self._thread = threading.Thread(
            target=self._run, args=(list(identities), name), name="age-decrypt", daemon=True
        )
        self._thread.start()

    def _source_read(self, size: int = -1) -> bytes:
        if self._stop.is_set():
            raise OSError("stopped")
        data = self._source.read(size)
        self.encrypted_read += len(data)
        return data

    def _put(self, item: bytes | BaseException | None) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(queue.Full):
                self._chunks.put(item, timeout=0.1)
                return
        raise OSError("stopped")

    def _run(self, identities: list[Any], name: str) -> None:
        reader = _SourceReader(self._source_read)
        try:
            decrypt_to(reader, identities, self._put, name)
        except BaseException as exc:
            if not self._stop.is_set():
                with contextlib.suppress(OSError):
                    self._put(exc)
            return
        with contextlib.suppress(OSError):
            self._put(None)

    def read(self, size: int = -1) -> bytes:
        while not self._buffer and not self._ended:
            item = self._chunks.get()
            if item is None:
                self._ended = True
            elif isinstance(item, BaseException):
                self._ended = True
                raise item
            else:
                self._buffer = item
        if size < 0 or size >= len(self._buffer):
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._chunks.get_nowait()
        self._thread.join(timeout=5)

    def __enter__(self) -> Decryptor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SourceReader:
    def __init__(self, read: Callable[[int], bytes]) -> None:
        self.read = read
