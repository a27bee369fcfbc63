"""The command palette (ctrl+p): every action by name, from the bindings plus palette-only ones."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from textual.app import App
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider


def palette_actions(app: App[object] | type[App[object]]) -> Iterator[tuple[str, str, str]]:
    """(title, help, action): each App binding with a description, then the palette-only ones."""
    seen: set[str] = set()
    for binding in app.BINDINGS:
        if (
            isinstance(binding, Binding)
            and binding.description
            and not binding.system
            and binding.action not in seen
        ):
            seen.add(binding.action)
            yield binding.description, binding.tooltip, binding.action
    yield from getattr(app, "PALETTE_ONLY", ())


class ActionsProvider(Provider):
    async def discover(self) -> Hits:
        for title, help_text, action in palette_actions(self.app):
            yield DiscoveryHit(title, partial(self.app.run_action, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, action in palette_actions(self.app):
            score = matcher.match(title)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(title),
                    partial(self.app.run_action, action),
                    help=help_text,
                )
