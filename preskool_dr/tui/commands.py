"""The command palette (ctrl+p): every action by name, from the bindings plus palette-only ones,
each with its key, and only those that apply to the run as it stands."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from functools import partial

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.content import Content
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


def action_keys(node: DOMNode | type[DOMNode]) -> dict[str, Binding]:
    """The first binding of each action of `node`: the key the palette shows beside it."""
    keys: dict[str, Binding] = {}
    for binding in node.BINDINGS:
        if isinstance(binding, Binding):
            keys.setdefault(binding.action, binding)
    return keys


def with_key(title: Content, key: str) -> Content:
    return title + Content.styled(f"  {key}", "bold") if key else title


class ActionsProvider(Provider):
    """The actions of the screen the palette was opened from, run on that screen; those the
    screen says do not apply now (its `offers`) are left out."""

    def _actions(self) -> Iterator[tuple[str, str, str, Callable[[], Awaitable[object]]]]:
        """(title, key, help, run): key is "" for a palette-only action."""
        screen = self.screen
        offers: Callable[[str], bool] = getattr(screen, "offers", lambda action: True)
        keys = action_keys(screen)
        for title, help_text, action in palette_actions(screen):
            if offers(action):
                binding = keys.get(action)
                key = self.app.get_key_display(binding) if binding else ""
                yield title, key, help_text, partial(self.app.run_action, action, screen)

    async def discover(self) -> Hits:
        for title, key, help_text, run in self._actions():
            yield DiscoveryHit(with_key(Content(title), key), run, text=title, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, key, help_text, run in self._actions():
            score = matcher.match(title)
            if score > 0:
                shown = with_key(matcher.highlight(title), key)
                yield Hit(score, shown, run, text=title, help=help_text)
