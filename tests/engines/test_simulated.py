"""The simulated engine as a user meets it: a bot that remembers, calculates and streams.

Dialogues go through `SimulatedEngine.stream` with the context the turn service
would build (the last `window` messages, ending with the user's), so memory is
tested the way it is used, including what falls out of the window.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatbot_sse.config import Settings
from chatbot_sse.domain import Message, Role
from chatbot_sse.engines import create_engine
from chatbot_sse.engines._simulated_arith import (
    ArithmeticProblem,
    calculate,
    find_expression,
)
from chatbot_sse.engines._simulated_phrases import JOKES
from chatbot_sse.engines.simulated import (
    ERROR_AFTER_CHUNKS,
    ERROR_TRIGGER,
    SLOW_TRIGGER,
    YIELD_EVERY,
    SimulatedEngine,
    split_chunks,
)
from chatbot_sse.errors import EngineError

FAST = SimulatedEngine(response_delay=0, token_delay=0)


def message(index: int, role: Role, text: str) -> Message:
    return Message(f"m{index}", "c" * 32, role, text, 1_700_000_000.0 + index)


async def stream_reply(context: Sequence[Message], engine: SimulatedEngine = FAST) -> str:
    chunks = [chunk async for chunk in engine.stream(context)]
    reply = "".join(chunks)
    assert chunks == split_chunks(reply)
    return reply


class Dialogue:
    """A conversation as the server keeps it: every turn sees the last `window` messages."""

    def __init__(self, window: int = 10) -> None:
        self.window = window
        self.messages: list[Message] = []

    async def say(self, text: str) -> str:
        self.messages.append(message(len(self.messages), Role.USER, text))
        reply = await stream_reply(self.messages[-self.window :])
        self.messages.append(message(len(self.messages), Role.ASSISTANT, reply))
        return reply


async def replies(*texts: str, window: int = 10) -> list[str]:
    dialogue = Dialogue(window)
    return [await dialogue.say(text) for text in texts]


async def last_reply(*texts: str) -> str:
    return (await replies(*texts))[-1]


# --- memory -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "introduction",
    [
        "Hello, my name is Ada",
        "I'm Ada.",
        "I am Ada, nice to meet you",
        "call me Ada",
        "my name's ada",
        "Hi! My name is Ada and I like tea.",
        "I\u2019m Ada",
    ],
)
async def test_remembers_the_users_name(introduction: str) -> None:
    first, later = await replies(introduction, "What is my name?")
    assert "Ada" in first
    assert "Ada" in later


async def test_names_have_at_most_three_words() -> None:
    assert "Ana Maria Garcia Lopez" not in await last_reply("My name is Ana Maria Garcia Lopez")
    assert "Ana Maria Garcia" in await last_reply("My name is Ana Maria Garcia Lopez")


async def test_pronouns_are_not_things_the_user_likes() -> None:
    assert "haven't told me what you like" in await last_reply("I love you", "what do I like?")


@pytest.mark.parametrize(
    "statement",
    [
        "I'm tired",
        "I'm from Paris",
        "I am fine",
        "I'm going home",
        "call me later",
        "my name is 42",
    ],
)
async def test_does_not_mistake_other_statements_for_a_name(statement: str) -> None:
    reply = await last_reply(statement, "what's my name?")
    assert "don't know your name" in reply


async def test_admits_not_knowing_the_name_and_asks() -> None:
    reply = await last_reply("What is my name?")
    assert "don't know your name yet" in reply
    assert reply.endswith("?")


async def test_a_later_introduction_wins() -> None:
    changed, recalled = (await replies("I'm Ada", "Actually, call me Bea", "who am I?"))[1:]
    assert "Bea" in changed
    assert "Bea" in recalled
    assert "Ada" not in recalled


async def test_greets_by_name_once_known() -> None:
    greeting = await last_reply("My name is Ada Lovelace", "Hello!")
    assert "Ada" in greeting
    assert "Lovelace" not in greeting  # addressed by first name


async def test_forgets_what_falls_out_of_the_context_window() -> None:
    turns = ["My name is Ada", "ok", "ok", "ok", "ok", "ok", "what is my name?"]
    assert "Ada" in (await replies(*turns, window=20))[-1]
    assert "don't know your name" in (await replies(*turns, window=10))[-1]


async def test_remembers_likes_and_dislikes() -> None:
    acknowledged, *_, recalled = await replies(
        "I like jazz and long walks", "I love green tea", "I hate mondays", "what do I like?"
    )
    assert "jazz and long walks" in acknowledged
    assert "jazz and long walks" in recalled
    assert "green tea" in recalled
    assert "mondays" in recalled


async def test_knowing_only_dislikes() -> None:
    assert "only know what you don't like: mondays" in await last_reply(
        "I can't stand mondays", "what do I like?"
    )


async def test_a_change_of_heart_moves_a_dislike_to_likes() -> None:
    reply = await last_reply(
        "I don't like olives", "Actually I really like olives", "what do I like?"
    )
    assert "you like olives" in reply
    assert "not a fan" not in reply


async def test_answers_whether_the_user_likes_something() -> None:
    assert "Yes" in await last_reply("I love jazz", "do I like jazz?")
    assert "don't like" in await last_reply("I hate jazz", "do I like jazz?")
    assert "haven't told me" in await last_reply("I love jazz", "do I like opera?")


async def test_questions_are_not_mistaken_for_likes() -> None:
    reply = await last_reply("do I like pizza?", "what do I like?")
    assert "haven't told me what you like" in reply


@pytest.mark.parametrize(
    ("statement", "question", "place"),
    [
        ("I live in Paris", "where do I live?", "Paris"),
        ("i live in new york", "Where do I live?", "New York"),
        ("I'm based in Berlin.", "where am i based?", "Berlin"),
        ("I'm from Japan", "where am I from?", "Japan"),
        ("I grew up in Lagos", "where did I grow up?", "Lagos"),
    ],
)
async def test_remembers_where_the_user_lives_and_comes_from(
    statement: str, question: str, place: str
) -> None:
    acknowledged, recalled = await replies(statement, question)
    assert place in acknowledged
    assert place in recalled


@pytest.mark.parametrize(
    ("statement", "question", "expected"),
    [
        ("I'm from Japan", "where do I live?", "you told me you're from Japan"),
        ("I live in Oslo", "where am I from?", "you told me you live in Oslo"),
        ("ok", "where do I live?", "haven't told me where you live"),
        ("ok", "where am I from?", "haven't told me where you're from"),
        ("I live in ''", "where do I live?", "haven't told me where you live"),
    ],
)
async def test_says_what_it_knows_about_places(
    statement: str, question: str, expected: str
) -> None:
    assert expected in await last_reply(statement, question)


async def test_several_facts_in_one_message() -> None:
    acknowledged, summary = await replies(
        "Hi, I'm Ada and I'm from London, and I love mathematics",
        "What do you know about me?",
    )
    assert "Nice to meet you, Ada" in acknowledged
    for fact in ("Ada", "London", "mathematics"):
        assert fact in acknowledged
        assert fact in summary


async def test_remembers_favourites_in_either_spelling() -> None:
    reply = await last_reply("My favourite colour is green.", "what's my favorite color?")
    assert "green" in reply
    assert "haven't told me your favourite food" in await last_reply("what is my favourite food?")


async def test_knows_nothing_about_a_new_user() -> None:
    assert "Not much yet" in await last_reply("what do you know about me?")


# --- recalling the conversation ---------------------------------------------------------------


async def test_recalls_the_previous_message() -> None:
    reply = await last_reply("I baked bread today", "The oven was too hot", "what did I just say?")
    assert '"The oven was too hot"' in reply


async def test_recalls_the_first_and_earlier_messages() -> None:
    texts = ["I baked bread today", "The oven was too hot", "It burned a little"]
    first = await last_reply(*texts, "what did I say first?")
    earlier = await last_reply(*texts, "what did I say earlier?")
    assert '"I baked bread today"' in first
    assert '"It burned a little"' in earlier
    assert '"The oven was too hot"' in earlier


async def test_nothing_to_recall_on_the_first_message() -> None:
    assert "first thing you've said" in await last_reply("what did I just say?")


async def test_long_messages_are_quoted_shortened() -> None:
    long_text = " ".join(f"word{i}" for i in range(100))
    reply = await last_reply(long_text, "what did I just say?")
    assert "word0" in reply
    assert "word99" not in reply
    assert "\u2026" in reply


async def test_has_said_nothing_before_the_first_reply() -> None:
    assert "haven't said anything yet" in await last_reply("what did you say?")


async def test_repeats_its_own_last_reply() -> None:
    first, repeated = await replies("What is 6 * 7?", "what did you say?")
    assert first in repeated


async def test_counts_the_messages_it_can_see() -> None:
    reply = await last_reply("one", "two", "how many messages have I sent?")
    assert "3 messages from you" in reply
    assert "2 replies from me" in reply


# --- the other rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("what is 12 * 7?", "= 84"),
        ("What's 2 + 3 * 4?", "= 14"),
        ("calculate (1 + 2) * 3", "= 9"),
        ("what is 7 / 2?", "= 3.5"),
        ("what is 2^10?", "= 1024"),
        ("what is 2 ** -1?", "= 0.5"),
        ("what is -2^2?", "= -4"),
        ("what is 12 times 7", "= 84"),
        ("what is 10 divided by 4", "= 2.5"),
        ("what is 0.1 + 0.2?", "= 0.3"),
        ("what is 1/3?", "\u2248 0.3333333333"),
        ("what is 17 mod 5?", "= 2"),
        ("what is 3 x 4?", "= 12"),
        ("what is 5 squared?", "= 25"),
        ("12*7", "= 84"),
        ("what is 4 ^ 0.5?", "= 2"),
        ("hey, what is 1 + 1?", "= 2"),
    ],
)
async def test_does_arithmetic(question: str, answer: str) -> None:
    assert answer in await last_reply(question)


@pytest.mark.parametrize(
    ("question", "problem"),
    [
        ("what is 5 / 0?", "dividing by zero"),
        ("what is 9^9^9?", "too large"),
        ("what is (-8) ^ 0.5?", "no real-number answer"),
        ("what is 0 ^ -1?", "dividing by zero"),
        ("what is 99 ^ 99.5?", "too large"),
        ("what is 999 ^ 999.5?", "too large"),
        ("what is 2^300 * 2^300?", "too large"),
    ],
)
async def test_explains_arithmetic_it_cannot_do(question: str, problem: str) -> None:
    assert problem in await last_reply(question)


@pytest.mark.parametrize(
    "text",
    [
        "I run 3-4 times a week",
        "what is __import__('os').system('true')",
        "2024",
        "what is 5?",
        "what is (1 + 2",
        "what is 1 + )",
        "I ran 5+3 km",
        "what is " + "1 + " * 200 + "1?",
    ],
)
def test_not_everything_with_numbers_is_arithmetic(text: str) -> None:
    assert find_expression(text.lower()) is None


@pytest.mark.parametrize(
    "expression", ["", "1 2", "(1 + 2", "(1 2)", "1 + )", "* 3", "1 +", "1 & 2"]
)
def test_malformed_expressions_do_not_parse(expression: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the parser's only way to say "not arithmetic"
        calculate(expression)


@given(
    st.integers(-(10**6), 10**6),
    st.sampled_from(["+", "-", "*", "/", "%"]),
    st.integers(-(10**6), 10**6),
)
def test_arithmetic_is_exact(left: int, operator: str, right: int) -> None:
    expression = f"{left} {operator} {right}"
    if operator in "/%" and right == 0:
        with pytest.raises(ArithmeticProblem):
            calculate(expression)
        return
    a, b = Fraction(left), Fraction(right)
    expected = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else 0, "%": a % b if b else 0}
    assert calculate(expression).value == expected[operator]


async def test_cannot_see_a_clock_and_says_so_deterministically() -> None:
    for question in ("what time is it?", "What's the date today?", "what day is it?"):
        reply = await last_reply(question)
        assert "clock" in reply
        assert reply == await last_reply(question)


_THANKED = "welcome|happy to help|any time"
_FAREWELL = "goodbye|see you|take care"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("thanks!", _THANKED),
        ("Thank you so much", _THANKED),
        ("bye", _FAREWELL),
        ("good night!", _FAREWELL),
        ("what can you do?", "/simulate error"),
        ("help", "arithmetic"),
        ("who are you?", "simulated engine"),
        ("how are you?", r"how (are you|is your day)"),
        ("I'm so tired", "tired"),
        ("I'm feeling happy", "happy"),
        ("Hello", "hello"),
        ("/simulate something", "unknown simulation command"),
    ],
)
async def test_small_talk(text: str, expected: str) -> None:
    assert re.search(expected, await last_reply(text), re.IGNORECASE)


async def test_goodbye_and_thanks_use_the_name() -> None:
    replies_ = await replies("I'm Ada", "thanks", "goodbye")
    assert all("Ada" in reply for reply in replies_)


async def test_tells_a_long_story_starring_the_user() -> None:
    story = await last_reply("My name is Ada and I love old maps", "Tell me a story")
    assert 100 <= len(story.split()) <= 200
    assert "Ada" in story
    assert "old maps" in story


async def test_stories_differ_with_the_conversation() -> None:
    stories = {await last_reply(*["ok"] * n, "tell me a story") for n in range(8)}
    assert len(stories) >= 2
    assert all(100 <= len(story.split()) <= 200 for story in stories)


async def test_tells_jokes() -> None:
    assert await last_reply("tell me a joke") in JOKES


async def test_a_question_gets_a_reply_about_its_topic() -> None:
    reply = await last_reply("What makes a good database index?")
    assert '"database"' in reply or "index" in reply


async def test_statements_get_varied_replies_that_mention_them() -> None:
    topics = ["gardening", "volcanoes", "sourdough", "chess", "bicycles", "astronomy"]
    answers = [await last_reply(f"I have been reading about {topic} lately") for topic in topics]
    for topic, answer in zip(topics, answers, strict=True):
        assert topic in answer
    assert len({answer.split()[0] for answer in answers}) >= 2


async def test_replies_are_a_reasonable_length() -> None:
    messages = [
        "Hello",
        "My name is Ada",
        "I like jazz",
        "what do I like?",
        "what is 12 * 7?",
        "what time is it?",
        "Why is the sky blue?",
        "I think databases are fascinating",
        "ok",
        "tell me a joke",
        "thanks",
        "bye",
    ]
    for reply in await replies(*messages):
        assert 5 <= len(reply.split()) <= 60, reply


async def test_a_greeting_prefixes_the_answer() -> None:
    reply = await last_reply("Hi, what is 2 + 2?")
    assert reply.startswith(("Hi", "Hello"))
    assert "= 4" in reply


async def test_empty_and_odd_contexts_still_get_a_reply() -> None:
    assert await stream_reply([])
    assert await stream_reply([message(0, Role.USER, "   ")])
    assert await stream_reply([message(0, Role.SYSTEM, "You are helpful.")])
    assert await stream_reply([message(0, Role.USER, "hi"), message(1, Role.ASSISTANT, "Hello!")])


async def test_a_huge_message_is_answered_quickly() -> None:
    context = [
        message(i, Role.USER if i % 2 == 0 else Role.ASSISTANT, "what's what's my name " * 1000)
        for i in range(11)
    ]
    started = time.perf_counter()
    assert await stream_reply(context)
    assert time.perf_counter() - started < 2


# --- determinism ------------------------------------------------------------------------------

_DIALOGUE = [
    "Hello, my name is Ada",
    "I like jazz",
    "The weather is strange today",
    "Why do cats purr?",
    "tell me a story",
    "ok",
]

_IN_ANOTHER_PROCESS = """
import asyncio, json, sys
from chatbot_sse.domain import Message, Role
from chatbot_sse.engines.simulated import SimulatedEngine

async def main():
    engine, context, out = SimulatedEngine(0, 0), [], []
    for i, text in enumerate(json.loads(sys.argv[1])):
        context.append(Message(f"u{i}", "c", Role.USER, text, 0.0))
        reply = "".join([c async for c in engine.stream(context)])
        context.append(Message(f"a{i}", "c", Role.ASSISTANT, reply, 0.0))
        out.append(reply)
    print(json.dumps(out))

asyncio.run(main())
"""


def test_same_replies_in_another_process() -> None:
    """Per-process hash salting must not leak into replies: every worker answers alike."""
    here = asyncio.run(replies(*_DIALOGUE, window=100))
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", _IN_ANOTHER_PROCESS, json.dumps(_DIALOGUE)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    assert json.loads(result.stdout) == here


# --- streaming --------------------------------------------------------------------------------


@given(st.text())
def test_chunks_rebuild_any_text(text: str) -> None:
    chunks = split_chunks(text)
    assert "".join(chunks) == text
    assert all(chunk for chunk in chunks)
    assert all(len(chunk.split()) <= 1 for chunk in chunks)


_roles = st.sampled_from(list(Role))
_contexts = st.lists(st.tuples(_roles, st.text(max_size=300)), max_size=12).map(
    lambda pairs: [message(i, role, text) for i, (role, text) in enumerate(pairs)]
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(_contexts, st.text(max_size=300))
def test_any_context_gets_a_whole_non_empty_reply(context: list[Message], last: str) -> None:
    if last.strip() in (ERROR_TRIGGER, SLOW_TRIGGER):
        last = "hello"
    context = [*context, message(len(context), Role.USER, last)]
    reply = asyncio.run(stream_reply(context))
    assert reply.strip()
    assert reply == asyncio.run(stream_reply(context))


async def test_error_trigger_fails_after_a_few_chunks() -> None:
    chunks: list[str] = []

    async def drain() -> None:
        async for chunk in FAST.stream([message(0, Role.USER, "  /simulate error ")]):
            chunks.append(chunk)

    with pytest.raises(EngineError, match="simulated engine failure") as caught:
        await drain()
    assert len(chunks) == ERROR_AFTER_CHUNKS
    assert caught.value.code == "engine_error"
    assert caught.value.retryable


async def test_error_trigger_in_batches_fails_after_the_same_chunks() -> None:
    batches: list[list[str]] = []

    async def drain() -> None:
        async for batch in FAST.stream_batches([message(0, Role.USER, "/simulate error")]):
            batches.append(batch)

    with pytest.raises(EngineError, match="simulated engine failure"):
        await drain()
    assert [len(batch) for batch in batches] == [ERROR_AFTER_CHUNKS]


async def test_chunks_ready_together_come_in_batches_paced_ones_alone() -> None:
    """With no delay the reply comes in batches of up to `YIELD_EVERY` chunks (a `sleep(0)`
    between them); paced, a batch per chunk. Either way the chunks are `stream`'s, in order."""
    context = [message(0, Role.USER, "tell me a long story")]
    chunks = [chunk async for chunk in FAST.stream(context)]
    assert len(chunks) > YIELD_EVERY  # the story is long enough to need two batches
    batches = [batch async for batch in FAST.stream_batches(context)]
    assert [chunk for batch in batches for chunk in batch] == chunks
    assert all(len(batch) == YIELD_EVERY for batch in batches[:-1])
    assert 0 < len(batches[-1]) <= YIELD_EVERY
    paced = SimulatedEngine(response_delay=0, token_delay=0.001)
    paced_batches = [batch async for batch in paced.stream_batches(context)]
    assert paced_batches == [[chunk] for chunk in chunks]


async def test_the_trigger_must_be_the_whole_message() -> None:
    reply = await last_reply("please /simulate error now")
    assert reply


def _gaps(stamps: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(stamps)]


async def test_paces_chunks_like_a_model() -> None:
    engine = SimulatedEngine(response_delay=0.1, token_delay=0.02)
    started = time.perf_counter()
    stamps = []
    async for _chunk in engine.stream([message(0, Role.USER, "what is 12 * 7?")]):
        stamps.append(time.perf_counter())
    assert stamps[0] - started >= 0.1
    gaps = _gaps(stamps)
    assert min(gaps) >= 0.015  # asyncio may wake a hair early on a coarse clock
    assert sum(gaps) >= 0.02 * len(gaps)
    assert stamps[-1] - started < 0.1 + 0.02 * len(gaps) + 2  # generous: a noisy machine


async def test_slow_trigger_uses_ten_times_the_token_delay() -> None:
    engine = SimulatedEngine(response_delay=0, token_delay=0.01)
    stamps = []
    async for _chunk in engine.stream([message(0, Role.USER, SLOW_TRIGGER)]):
        stamps.append(time.perf_counter())
        if len(stamps) == 4:
            break
    assert min(_gaps(stamps)) >= 0.09


async def test_zero_delays_still_let_other_tasks_run() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    await last_reply("tell me a story")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ticks - before >= 3


async def test_health_and_construction() -> None:
    assert await FAST.health() == {"name": "simulated", "status": "ok"}
    engine = SimulatedEngine()
    assert (engine.response_delay, engine.token_delay) == (0.5, 0.05)
    with pytest.raises(ValueError, match="negative"):
        SimulatedEngine(response_delay=-1)
    built = create_engine(Settings(store_url="memory://", response_delay=0.2, token_delay=0.01))
    assert isinstance(built, SimulatedEngine)
    assert (built.response_delay, built.token_delay) == (0.2, 0.01)
    assert "0.2" in repr(built)
