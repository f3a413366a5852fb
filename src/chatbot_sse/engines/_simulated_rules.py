"""The simulated bot's brain: pick a rule for the last user message, fill in a reply.

Rules are tried in order (first match wins): the `/simulate` triggers, questions
about what the user said or told us, the clock, arithmetic, stories and jokes,
help, acknowledging newly stated facts, feelings, goodbyes and thanks, then fallbacks
that quote the message's topic words. A leading greeting ("Hi, what is 2+2?")
is peeled off first and answered as a prefix.

Everything is a pure function of the context. Where a choice among phrasings
is made it comes from `zlib.crc32` of the message and its position, never from
`hash()` (salted per process) or randomness, so every worker gives the same
reply to the same context.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

from chatbot_sse.domain import Message
from chatbot_sse.engines import _simulated_phrases as phrases
from chatbot_sse.engines._simulated_arith import ArithmeticProblem, calculate, find_expression
from chatbot_sse.engines._simulated_memory import normalize, remember
from chatbot_sse.engines._simulated_recall import RECALL_RULES
from chatbot_sse.engines._simulated_turn import Rule, Turn, join

__all__ = ["ERROR_TRIGGER", "SLOW_TRIGGER", "compose_reply"]

ERROR_TRIGGER = "/simulate error"
SLOW_TRIGGER = "/simulate slow"
MAX_RULE_CHARS = 500  # longer messages skip intent rules: they are essays, not commands

_GREETING = re.compile(
    r"^(?:hi|hello|hey|hiya|howdy|greetings|yo|good (?:morning|afternoon|evening|day))"
    r"(?: there| again| bot| everyone| all)?\b[\s,!.]*"
)
_QUESTION_WORDS = frozenset(
    """what why how when where who which whom whose can could would should is are am do does
    did will shall may might was were have has""".split()  # noqa: SIM905 - a word list reads best as prose
)
_TOPIC_PREPOSITIONS = frozenset({"about", "of", "on", "with", "for", "into", "regarding"})
_WORDS = re.compile(r"[^\W\d_][\w'-]*")


def compose_reply(context: Sequence[Message]) -> str:
    """The whole reply to the last user message of `context`; never empty."""
    memory = remember(context)
    text = normalize(memory.current)
    if not text:
        return (
            "I didn't catch anything there. Say hello, tell me your name, or ask "
            '"what can you do?" to get started.'
        )
    key = f"{len(memory.earlier)}\x00{memory.current}".encode("utf-8", "surrogatepass")
    seed = zlib.crc32(key)
    greeting = _GREETING.match(text)
    rest = text[greeting.end() :] if greeting else text
    if greeting and not any(ch.isalnum() for ch in rest):
        return _greet(Turn(memory, rest, seed))
    turn = Turn(memory, rest, seed)
    reply = _first_reply(turn, _RULES if len(rest) <= MAX_RULE_CHARS else _FALLBACKS)
    if greeting and not memory.stated.name:
        reply = turn.pick((f"Hi{turn.name}! ", f"Hello{turn.name}! ")) + reply
    return reply


def _first_reply(turn: Turn, rules: Sequence[Rule]) -> str:
    """The reply of the first rule that has one (the last rule always has). A loop, not
    `next()` over two generators: every message tries about twenty rules, and each of
    them was two generator steps more (0.7 of the bot's 11 us for a first message)."""
    for rule in rules:
        reply = rule(turn)
        if reply:
            return reply
    raise AssertionError("the last rule answers every message")


def _greet(turn: Turn) -> str:
    if turn.memory.earlier:
        return f"Hello again{turn.name}! Good to see you. What would you like to talk about?" + (
            "" if turn.memory.name else " You can also tell me your name; I'll remember it."
        )
    return (
        "Hello! I'm the simulated assistant of chatbot-sse. Tell me your name, ask me a "
        'question, or ask "what can you do?" to get started.'
    )


def _simulate(turn: Turn) -> str | None:
    if not turn.text.startswith("/simulate"):
        return None
    command = turn.memory.current.strip()
    if command == ERROR_TRIGGER:
        return (
            "This reply is going to fail on purpose after a few words, so you can see how the "
            "server reports an engine error in the middle of a stream."
        )
    if command == SLOW_TRIGGER:
        return (
            "Taking it slowly: this reply streams at ten times the usual delay between words, "
            "which leaves plenty of time to close the connection mid-reply and watch how the "
            "server copes with a client that goes away."
        )
    return (
        f'Unknown simulation command. Try "{ERROR_TRIGGER}" (fails in the middle of the reply) '
        f'or "{SLOW_TRIGGER}" (streams ten times slower than usual).'
    )


_TIME_Q = re.compile(
    r"\bwhat(?:'s| is) the (?:time|date|day)\b|\bwhat time is it\b|\btoday's date\b"
    r"|\bwhat(?:'s| is) (?:today's|the current) date\b|\bwhat (?:day|date|year|month) is (?:it|today)\b"
    r"|\bcurrent (?:time|date)\b"
)
_STORY = re.compile(
    r"\b(?:tell|give|write|read|share)(?: me| us)? (?:a|another|one more|some) (?:\w+ )?"
    r"(?:story|tale)\b|^(?:a )?story\b|\bonce upon a time\b"
)
_JOKE = re.compile(
    r"\b(?:tell|give)(?: me| us)? (?:a|another|one more) (?:\w+ )?joke\b|^(?:a )?joke\b"
    r"|\bmake me laugh\b|\bsay something funny\b|\bknow any jokes\b"
)
_IDENTITY = re.compile(
    r"\bwho are you\b|\bwhat are you\b|\bwhat(?:'s| is) your name\b"
    r"|\bare you (?:a |an )?(?:bot|robot|human|real|ai|person)\b"
)
_HELP = re.compile(
    r"^(?:can you )?help(?: me)?[?.!]*$|\bwhat can you do\b|\bwhat do you do\b"
    r"|\bhow (?:do|does) (?:this|you) work\b|\bwhat should i (?:ask|say)\b|\bcommands\b"
)
_HOW_ARE_YOU = re.compile(
    r"\bhow are you\b|\bhow's it going\b|\bhow are things\b|\bwhat's up\b|\bhow have you been\b"
)
_MOOD = re.compile(
    r"^(?:i'm|i am|i feel|feeling)\s+(?:feeling\s+)?"
    r"(?:(?:so|very|really|a bit|a little|quite|pretty|kind of|super|rather)\s+)*([a-z]+)\b"
)
_GOODBYE = re.compile(
    r"^(?:bye|goodbye|good ?night|see you|see ya|farewell|cya|take care|talk (?:to you )?later"
    r"|catch you later)\b|\b(?:good)?bye[.!]*$"
)
_THANKS = re.compile(
    r"^(?:thanks|thank you|thank u|thx|ty|cheers|many thanks|much appreciated)\b"
    r"|\b(?:thanks|thank you)(?: so much| a lot| very much)?[.!]*$|\bappreciate it\b"
)


def _clock(turn: Turn) -> str | None:
    if not (match := _TIME_Q.search(turn.text)):
        return None
    kind = "time" if "time" in match.group() else "date"
    return (
        "I can't see a clock from in here: I'm a simulated assistant and I answer the same way "
        f"every time, so any {kind} I gave you would be made up. The clock on your device "
        "knows better than I do."
    )


def _arithmetic(turn: Turn) -> str | None:
    if (expression := find_expression(turn.text)) is None:
        return None
    try:
        calculation = calculate(expression)
    except ArithmeticProblem as problem:
        return f"I can't work out {expression}: {problem}. Want to try another calculation?"
    answer = f"{calculation.display} {calculation.result()}"
    lead = turn.pick((f"{answer}.", f"That's {answer}.", f"Let me work that out: {answer}."))
    return f"{lead} Anything else you'd like me to calculate?"


def _story(turn: Turn) -> str | None:
    if not _STORY.search(turn.text):
        return None
    role, default_name, default_thing, text = phrases.STORIES[turn.seed % len(phrases.STORIES)]
    hero = turn.memory.name or default_name
    thing = turn.memory.likes[-1] if turn.memory.likes else default_thing
    return text.format(intro=f"a {role} named {hero}", hero=hero, thing=thing)


def _canned(pattern: re.Pattern[str], replies: Sequence[str]) -> Rule:
    def rule(turn: Turn) -> str | None:
        return turn.pick(replies).format(name=turn.name) if pattern.search(turn.text) else None

    return rule


def _mood(turn: Turn) -> str | None:
    if not (match := _MOOD.match(turn.text)):
        return None
    mood = match.group(1)
    if mood in phrases.LOW_MOODS:
        return turn.pick(phrases.FEELING_LOW).format(name=turn.name, mood=mood)
    if mood in phrases.HIGH_MOODS:
        return turn.pick(phrases.FEELING_HIGH).format(name=turn.name, mood=mood)
    return None


def _acknowledge(turn: Turn) -> str | None:
    memory, stated = turn.memory, turn.memory.stated
    if not stated:
        return None
    notes = [f"you like {join(stated.likes)}"] if stated.likes else []
    notes += [f"you don't like {join(stated.dislikes)}"] if stated.dislikes else []
    notes += [f"you live in {stated.home}"] if stated.home else []
    notes += [f"you're from {stated.origin}"] if stated.origin else []
    notes += [f"your favourite {kind} is {value}" for kind, value in stated.favourites]
    if stated.name and memory.previous_name not in (None, stated.name):
        lead = f"Got it, I'll call you {stated.name} from now on."
    elif stated.name:
        lead = f"Nice to meet you, {stated.name}!"
    else:
        lead = turn.pick((f"Good to know{turn.name}.", f"Thanks for telling me{turn.name}."))
    body = f" I'll remember that {join(notes)}." if notes else " I'll remember your name."
    if not memory.name:
        follow = "What's your name, by the way?"
    elif not memory.likes:
        follow = "What do you like to do for fun?"
    elif not (memory.home or memory.origin):
        follow = "Where are you writing from?"
    else:
        follow = "What else would you like to talk about?"
    return f"{lead}{body} {follow}"


def _question(turn: Turn) -> str | None:
    first = turn.text.split(maxsplit=1)[0] if turn.text.split() else ""
    if not (turn.text.endswith("?") or first in _QUESTION_WORDS):
        return None
    return _about_topic(turn, phrases.QUESTION_TEMPLATES, (phrases.VAGUE_QUESTION,))


def _statement(turn: Turn) -> str:
    return _about_topic(turn, phrases.STATEMENT_TEMPLATES, phrases.VAGUE_STATEMENT)


def _about_topic(turn: Turn, templates: Sequence[str], vague: Sequence[str]) -> str:
    """Fill a template with the message's topic words: the reply shows it was read.

    Topic words are the first three that aren't stopwords; the main one is the
    first that follows "about", "of"... (usually the object of the sentence),
    else the longest.
    """
    keywords: list[str] = []
    main: str | None = None
    previous = ""
    for match in _WORDS.finditer(turn.text):
        word = match.group().strip("'-").removesuffix("'s")
        if len(word) >= 3 and word not in phrases.STOPWORDS and word not in keywords:
            keywords.append(word)
            if main is None and previous in _TOPIC_PREPOSITIONS:
                main = word
            if len(keywords) == 3:
                break
        previous = word
    if not keywords:
        return turn.pick(vague).format(name=turn.name)
    main = main or max(reversed(keywords), key=len)
    topics = join([f'"{k}"' for k in keywords])
    return turn.pick(templates).format(name=turn.name, topics=topics, main=main, quoted=f'"{main}"')


_RULES: tuple[Rule, ...] = (
    _simulate,
    *RECALL_RULES,
    _clock,
    _arithmetic,
    _story,
    _canned(_JOKE, phrases.JOKES),
    _canned(_IDENTITY, (phrases.IDENTITY,)),
    _canned(_HELP, (phrases.HELP,)),
    _canned(_HOW_ARE_YOU, phrases.HOW_ARE_YOU),
    _acknowledge,
    _mood,
    _canned(_GOODBYE, phrases.GOODBYES),
    _canned(_THANKS, phrases.THANKS),
    _question,
    _statement,
)
_FALLBACKS: tuple[Rule, ...] = (_question, _statement)
