"""One turn as the simulated bot's rules see it, and the small text helpers they share.

A rule is a function `Turn -> str | None`: the reply if the rule applies to
the message, None to let the next rule try.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chatbot_sse.engines._simulated_memory import Memory

__all__ = ["Rule", "Turn", "join", "plural", "quote"]


@dataclass(frozen=True, slots=True)
class Turn:
    """The message being answered, in matching form, with what the bot remembers."""

    memory: Memory
    text: str  # normalized, greeting removed
    seed: int  # a stable hash of the message and its position: picks among phrasings

    @property
    def name(self) -> str:
        """ ", Ada" when the user's name is known (first name only): slots into "Hello{name}!"."""
        return f", {self.memory.name.split()[0]}" if self.memory.name else ""

    def pick(self, options: Sequence[str]) -> str:
        return options[self.seed % len(options)]


Rule = Callable[[Turn], str | None]


def join(items: Sequence[str]) -> str:
    """ "a", "a and b", "a, b and c"; "a and b, and c" when an item has its own "and"."""
    if len(items) == 1:
        return items[0]
    last = ", and " if any(" and " in item for item in items) else " and "
    return f"{', '.join(items[:-1])}{last}{items[-1]}"


def quote(text: str, max_words: int = 25) -> str:
    """The user's words back, whitespace tidied and cut short if long."""
    words = text.split()
    return " ".join(words[:max_words]) + ("…" if len(words) > max_words else "")


def plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else plural or singular + 's'}"
