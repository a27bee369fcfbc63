"""The drill log's signing namespace, apart from the signing code: help texts show it
without importing subprocess handling."""

from __future__ import annotations

NAMESPACE = "preskool-dr-drill"
# an allowed_signers line, for help texts
ALLOWED_SIGNERS_EXAMPLE = f'alice namespaces="{NAMESPACE}" ssh-ed25519 AAAA...'
