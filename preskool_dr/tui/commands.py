"""The command palette (ctrl+p): every action by name, from the bindings plus palette-only ones."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from functools import partial

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.dom import DOMNode


def palette_actions(node: DOMNode | type[DOMNode]) -> Iterator[tuple[str, str, str]]:
    """(title, help, action): each binding of `node` with a description, then its
    palette-only ones (PALETTE_ONLY)."""
    seen: set[str] = set()
    for binding in node.BINDINGS:
        if (
            isinstance(binding, Binding)
            and binding.description
            and not binding.system
            and binding.action not in seen
        ):
            seen.add(binding.action)
            yield binding.description, binding.tooltip, binding.action
    yield from getattr(node, "PALETTE_ONLY", ())


class ActionsProvider(Provider):
    """The actions of the screen the palette was opened from, run on that screen."""

    def _actions(self) -> Iterator[tuple[str, str, Callable[[], Awaitable[object]]]]:
        for title, help_text, action in palette_actions(self.screen):
            yield title, help_text, partial(self.app.run_action, action, self.screen)

    async def discover(self) -> Hits:
        for title, help_text, run in self._actions():
            yield DiscoveryHit(title, run, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, run in self._actions():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), run, help=help_text)
