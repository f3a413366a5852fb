"""What the simulated bot remembers: facts the user stated, re-read from the context each turn.

The engine keeps no state between turns: a reply depends only on the context it
is handed, so any worker can answer any turn and the same context always gets
the same reply. "Memory" is therefore re-derived by scanning the user's
messages oldest first, a later statement overriding an earlier one ("call me
Bea" after "I'm Ada"). Facts older than the context window are forgotten, much
as a real model forgets what falls out of its prompt.

Extraction is deliberately conservative: a missed fact only costs a "you
haven't told me", a wrong one makes the bot look silly ("nice to meet you,
Tired").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from chatbot_sse.domain import Message, Role

__all__ = ["Facts", "Memory", "normalize", "remember"]

# Words that follow "I'm" / "call me" without being a name.
_NOT_NAMES = frozenset(
    """a an the not so very really just here there back home fine good great ok okay well
    sorry sure glad happy sad tired bored busy done from in at on going trying looking
    feeling still also only new sick hungry ready afraid interested curious what who how
    why when where maybe later tomorrow today now if and but or i you me your my it that
    this called named""".split()  # noqa: SIM905 - a word list reads best as prose
)
_SMALL_WORDS = frozenset({"of", "the", "de", "la", "le", "del", "and", "on", "upon", "am"})
_OBJECT_PRONOUNS = frozenset({"it", "that", "this", "you", "them", "him", "her", "those", "these"})

_CLAUSES = re.compile(r"[.!?;:,\n]+|\s+(?:but|and|so|because)\s+(?=(?:i|i'm|my)\b)", re.IGNORECASE)
_FILLER = r"^(?:(?:and|also|so|oh|well|yes|yeah|hi|hello|hey|honestly|actually|but|ok|okay)\s+)*"
_ADVERBS = r"(?:(?:really|also|just|absolutely|totally|truly|do|genuinely)\s+)*"
_DISLIKE = re.compile(
    _FILLER + r"i\s+" + _ADVERBS + r"(?:(?:don't|do\s+not|dont)\s+(?:like|love|enjoy)|hate|dislike"
    r"|can't\s+stand|detest)\s+(.+)"
)
_LIKE = re.compile(_FILLER + r"i\s+" + _ADVERBS + r"(?:like|love|enjoy|adore)\s+(.+)")
_HOME = re.compile(
    _FILLER
    + r"(?:i\s+(?:currently\s+|now\s+)?(?:live|reside)|(?:i'm|i\s+am)\s+(?:currently\s+|now\s+)?"
    r"(?:living|based))\s+in\s+(.+)"
)
_ORIGIN = re.compile(
    _FILLER + r"(?:(?:i'm|i\s+am)\s+(?:originally\s+)?from|i\s+(?:originally\s+)?come\s+from"
    r"|i\s+grew\s+up\s+in)\s+(.+)"
)
_FAVOURITE = re.compile(r"\bmy\s+favou?rite\s+([a-z][a-z -]{0,30}?)\s+is\s+(.+)")
_EXPLICIT_NAME = re.compile(r"\b(?:my\s+name\s+is|my\s+name's|call\s+me)\s+(.+)", re.IGNORECASE)
_IM_NAME = re.compile(r"(?:^|[\s,])(?:i'm|i\s+am)\s+(.+)", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_][\w'-]*")


def normalize(text: str) -> str:
    """Lower-case, straight apostrophes, single spaces: the form every rule matches against."""
    return " ".join(text.replace("\u2019", "'").replace("\u2018", "'").lower().split())


@dataclass(frozen=True, slots=True)
class Facts:
    """What one message states about the user."""

    name: str | None = None
    likes: tuple[str, ...] = ()
    dislikes: tuple[str, ...] = ()
    home: str | None = None
    origin: str | None = None
    favourites: tuple[tuple[str, str], ...] = ()

    def __bool__(self) -> bool:
        return any((self.name, self.likes, self.dislikes, self.home, self.origin, self.favourites))


NO_FACTS = Facts()
"""What a message that states nothing states: one shared instance (it is frozen), not a new
one per `Memory` (a frozen dataclass's `__init__` sets each field through `object.__setattr__`)."""


@dataclass(slots=True)
class Memory:
    """Everything the bot knows this turn, derived from the context alone."""

    current: str = ""  # the message being answered, as typed
    stated: Facts = NO_FACTS  # facts in the current message
    earlier: list[str] = field(default_factory=list)  # the user's previous messages, oldest first
    replies: list[str] = field(default_factory=list)  # the bot's previous replies, oldest first
    name: str | None = None
    previous_name: str | None = None  # the name known before the current message
    likes: list[str] = field(default_factory=list)
    dislikes: list[str] = field(default_factory=list)
    home: str | None = None
    origin: str | None = None
    favourites: dict[str, str] = field(default_factory=dict)

    def learn(self, facts: Facts) -> None:
        if facts.name:
            self.name = facts.name
        for item in facts.likes:
            _move(item, self.dislikes, self.likes)
        for item in facts.dislikes:
            _move(item, self.likes, self.dislikes)
        self.home = facts.home or self.home
        self.origin = facts.origin or self.origin
        self.favourites.update(facts.favourites)


def remember(context: Sequence[Message]) -> Memory:
    """Read the context (oldest first) into a Memory answering its last user message.

    System messages are ignored; anything after the last user message (there
    should be nothing) is treated as earlier replies.
    """
    last_user = max((i for i, m in enumerate(context) if m.role is Role.USER), default=-1)
    memory = Memory()
    for index, message in enumerate(context):
        if message.role is Role.ASSISTANT:
            memory.replies.append(message.content)
        elif message.role is Role.USER:
            facts = facts_in(message.content)
            if index == last_user:
                memory.current = message.content
                memory.stated = facts
                memory.previous_name = memory.name
            else:
                memory.earlier.append(message.content)
            memory.learn(facts)
    return memory


@lru_cache(maxsize=4096)
def facts_in(text: str) -> Facts:
    """The facts one message states. Cached: each message is re-read on every later turn."""
    if len(text) > 2000:  # an essay, not an introduction; keep the rules cheap
        text = text[:2000]
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    name: str | None = None
    likes: list[str] = []
    dislikes: list[str] = []
    home = origin = None
    favourites: list[tuple[str, str]] = []
    for raw in _CLAUSES.split(text):
        clause = raw.strip()
        lowered = " ".join(clause.lower().split())
        if not lowered:
            continue
        name = _name_in(clause) or name
        if match := _DISLIKE.match(lowered):
            dislikes.extend(_items(match.group(1)))
        elif match := _LIKE.match(lowered):
            likes.extend(_items(match.group(1)))
        if match := _HOME.match(lowered):
            home = _place(match.group(1), clause)
        if match := _ORIGIN.match(lowered):
            origin = _place(match.group(1), clause)
        if match := _FAVOURITE.search(lowered):
            favourite = _phrase(match.group(2))
            if favourite:
                favourites.append((favourite_key(match.group(1)), favourite))
    return Facts(name, tuple(likes), tuple(dislikes), home, origin, tuple(favourites))


def favourite_key(kind: str) -> str:
    """One spelling per kind of favourite, so "colour" is found when asked about "color"."""
    return " ".join(kind.split()).replace("colour", "color").replace("flavour", "flavor")


def _name_in(clause: str) -> str | None:
    if match := _EXPLICIT_NAME.search(clause):
        return _name_from(match.group(1), require_capital=False)
    if match := _IM_NAME.search(clause):
        return _name_from(match.group(1), require_capital=True)
    return None


def _name_from(rest: str, *, require_capital: bool) -> str | None:
    """Up to three words of a name. Only the first may be lower-case, and only after
    an explicit "my name is" / "call me": "I'm tired" must not name anyone Tired.
    """
    words: list[str] = []
    position = 0
    while len(words) < 3:
        match = _WORD.match(rest, position)
        if match is None:
            break
        word = match.group()
        if word.lower() in _NOT_NAMES:
            break
        if (words or require_capital) and not word[0].isupper():
            break
        words.append(word)
        position = match.end()
        if not rest.startswith(" ", position):
            break
        position += 1
    if not words:
        return None
    return " ".join(w[0].upper() + w[1:] if w.islower() else w for w in words)


def _items(text: str) -> list[str]:
    """What follows "I like": one item ("cats and dogs" stays whole), pronouns dropped."""
    item = _phrase(text)
    if item is None or item in _OBJECT_PRONOUNS or item.split()[0] in _OBJECT_PRONOUNS:
        return []
    return [item]


def _phrase(text: str, max_words: int = 6) -> str | None:
    words = text.strip(" \t'\"").split()[:max_words]
    phrase = " ".join(words).strip(" '\"-")
    return phrase or None


def _place(lowered: str, clause: str) -> str | None:
    """The place as the user wrote it, capitalised if they typed it all lower-case."""
    phrase = _phrase(lowered, max_words=5)
    if phrase is None:
        return None
    start = " ".join(clause.split()).lower().rfind(phrase)
    original = " ".join(clause.split())[start : start + len(phrase)] if start >= 0 else phrase
    if original != original.lower():
        return original
    words = original.split()
    return " ".join(
        w if (i and w in _SMALL_WORDS) else w[0].upper() + w[1:] for i, w in enumerate(words)
    )


def _move(item: str, source: list[str], target: list[str]) -> None:
    """A later "I love X" cancels an earlier "I hate X", and vice versa."""
    folded = item.casefold()
    source[:] = [s for s in source if s.casefold() != folded]
    if all(t.casefold() != folded for t in target):
        target.append(item)
