"""Rules that answer questions about the conversation itself, from the bot's Memory.

"What is my name?", "what do I like?", "where do I live?", "what did I just
say?", "how many messages...": each answers from facts re-read out of the
context (see `_simulated_memory`), and says so plainly when it doesn't know,
inviting the user to tell.
"""

from __future__ import annotations

import re

from chatbot_sse.engines._simulated_memory import favourite_key
from chatbot_sse.engines._simulated_turn import Rule, Turn, join, plural, quote

__all__ = ["RECALL_RULES"]

_NAME_Q = re.compile(
    r"\b(?:what(?:'s| is| was)|do you (?:know|remember)|tell me|say|guess|remember|forgot)\b"
    r".*\bmy name\b|\bwho am i\b"
)
_LIKES_Q = re.compile(
    r"\bwhat (?:do|did) i (?:like|love|enjoy)\b|\bwhat are my (?:hobbies|interests|likes)\b"
    r"|\bdo you (?:know|remember) what i (?:like|love|enjoy)\b|\bwhat things do i like\b"
)
_DO_I_LIKE = re.compile(r"^do i (?:like|love|enjoy) (.+?)[?.!]*$")
_HOME_Q = re.compile(
    r"\bwhere (?:do|did) i (?:live|stay)\b|\bwhere(?:'s| is) my home\b|\bwhere am i (?:based|living)\b"
)
_ORIGIN_Q = re.compile(r"\bwhere (?:am|was) i (?:from|born)\b|\bwhere (?:do|did) i (?:come|grow)\b")
_FAVOURITE_Q = re.compile(r"\bwhat(?:'s| is| was) my favou?rite ([a-z][a-z -]{0,30}?)[?.!]*$")
_SAID_Q = re.compile(
    r"\bwhat (?:did|have) i (?:just |already |previously |earlier |first )?"
    r"(?:say|said|write|wrote|type|typed|ask|asked)\b"
    r"|\bwhat (?:was|were) my (?:last|previous|first|earlier) (?:message|question)s?\b"
)
_FIRST = re.compile(r"\bfirst\b|\b(?:start|beginning)\b")
_EARLIER = re.compile(r"\bearlier\b|\bbefore that\b|\bso far\b|\bmessages\b")
_YOU_SAID_Q = re.compile(
    r"\bwhat did you (?:just )?say\b|\brepeat (?:that|yourself|what you said|your last)\b"
    r"|\bsay (?:that|it) again\b"
)
_COUNT_Q = re.compile(
    r"\bhow many (?:messages|times|things|turns|questions)\b|\bhow long have we been (?:talking|chatting)\b"
)
_ABOUT_ME_Q = re.compile(
    r"\bwhat do you (?:know|remember) about me\b|\btell me (?:about|what you know about) (?:me|myself)\b"
    r"|\bwhat have i told you\b|\bwhat do you remember\b"
)


def _recall_name(turn: Turn) -> str | None:
    if not _NAME_Q.search(turn.text):
        return None
    if name := turn.memory.name:
        return turn.pick(
            (
                f"Your name is {name}. You told me earlier, and I haven't forgotten.",
                f"You're {name}, of course! I remember what you tell me in this conversation.",
            )
        )
    return "I don't know your name yet: you haven't told me. What should I call you?"


def _recall_likes(turn: Turn) -> str | None:
    memory = turn.memory
    if match := _DO_I_LIKE.match(turn.text):
        thing = match.group(1).casefold()
        if any(_same_thing(thing, like) for like in memory.likes):
            return f"Yes{turn.name}! You told me you like {match.group(1)}. Good taste, I'd say."
        if any(_same_thing(thing, dislike) for dislike in memory.dislikes):
            return f"Not according to you{turn.name}: you told me you don't like {match.group(1)}."
        return f"You haven't told me whether you like {match.group(1)}. Do you?"
    if not _LIKES_Q.search(turn.text):
        return None
    if memory.likes:
        reply = f"You told me you like {join(memory.likes[-5:])}."
        if memory.dislikes:
            reply += f" And you're not a fan of {join(memory.dislikes[-3:])}."
        return reply + " Anything else you enjoy?"
    if memory.dislikes:
        return (
            f"I only know what you don't like: {join(memory.dislikes[-3:])}. "
            "What do you enjoy, though?"
        )
    return "You haven't told me what you like yet. What do you enjoy doing?"


def _recall_place(turn: Turn) -> str | None:
    home, origin = turn.memory.home, turn.memory.origin
    if _HOME_Q.search(turn.text):
        if home:
            return f"You live in {home}{turn.name}. At least, that's what you told me."
        if origin:
            return f"You haven't said where you live, but you told me you're from {origin}."
        return "You haven't told me where you live yet. Where are you writing from?"
    if _ORIGIN_Q.search(turn.text):
        if origin:
            where = f" and live in {home}" if home else ""
            return f"You told me you're from {origin}{where}{turn.name}. I haven't forgotten."
        if home:
            return f"You haven't said where you're from, but you told me you live in {home}."
        return "You haven't told me where you're from yet. Where is home for you?"
    return None


def _recall_favourite(turn: Turn) -> str | None:
    if not (match := _FAVOURITE_Q.search(turn.text)):
        return None
    kind = favourite_key(match.group(1))
    if value := turn.memory.favourites.get(kind):
        return f"Your favourite {kind} is {value}. You told me so yourself{turn.name}."
    return f"You haven't told me your favourite {kind} yet. What is it?"


def _recall_said(turn: Turn) -> str | None:
    earlier = turn.memory.earlier
    if _YOU_SAID_Q.search(turn.text):
        if not turn.memory.replies:
            return "I haven't said anything yet: this is the start of our conversation."
        return f'I said: "{quote(turn.memory.replies[-1], 40)}"'
    if not _SAID_Q.search(turn.text):
        return None
    if not earlier:
        return (
            f"This is the first thing you've said to me{turn.name}, so there's nothing "
            "earlier to recall yet."
        )
    if _FIRST.search(turn.text):
        return f'The first thing you said that I can still recall was: "{quote(earlier[0])}".'
    if _EARLIER.search(turn.text) and len(earlier) > 1:
        return f'Earlier you said "{quote(earlier[-1])}", and before that "{quote(earlier[-2])}".'
    return f'You just said: "{quote(earlier[-1])}". Want to talk more about that?'


def _count(turn: Turn) -> str | None:
    if not _COUNT_Q.search(turn.text):
        return None
    mine, yours = len(turn.memory.replies), len(turn.memory.earlier) + 1
    return (
        f"Counting this one, I can see {plural(yours, 'message')} from you and "
        f"{plural(mine, 'reply', 'replies')} from me in the part of our conversation I remember."
    )


def _about_me(turn: Turn) -> str | None:
    if not _ABOUT_ME_Q.search(turn.text):
        return None
    memory = turn.memory
    facts = [f"your name is {memory.name}"] if memory.name else []
    facts += [f"you live in {memory.home}"] if memory.home else []
    facts += [f"you're from {memory.origin}"] if memory.origin else []
    facts += [f"you like {join(memory.likes[-5:])}"] if memory.likes else []
    facts += [f"you don't like {join(memory.dislikes[-3:])}"] if memory.dislikes else []
    facts += [f"your favourite {k} is {v}" for k, v in memory.favourites.items()]
    if not facts:
        return (
            "Not much yet! Tell me your name, where you live or what you like, and I'll "
            "remember it for the rest of our conversation."
        )
    return f"Here's what I know about you: {join(facts)}. Did I get that right?"


def _same_thing(asked: str, known: str) -> bool:
    known = known.casefold()
    return asked == known or asked in known or known in asked


RECALL_RULES: tuple[Rule, ...] = (
    _recall_name,
    _recall_likes,
    _recall_place,
    _recall_favourite,
    _recall_said,
    _count,
    _about_me,
)
