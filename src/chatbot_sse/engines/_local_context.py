"""Fitting a conversation into a model's context window: drop the oldest messages first.

The turn service hands over up to `MAX_HISTORY_LENGTH` messages; a small model's
window may not hold them all next to room for the reply. The newest message (the
one being answered) always stays; if even it alone is too long, its beginning is
cut, since the end of a long message usually holds the question. Every cut is
counted, so the engine can report it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chatbot_sse.domain import Message
from chatbot_sse.engines._local_model import ChatPrompt

Render = Callable[[Sequence[dict[str, str]]], ChatPrompt]
Tokenize = Callable[[str], list[int]]
Detokenize = Callable[[Sequence[int]], bytes]


@dataclass(slots=True, frozen=True)
class FittedPrompt:
    prompt: ChatPrompt
    kept: int  # messages of the context in the prompt
    dropped: int  # oldest messages left out
    trimmed_tokens: int  # tokens cut from the start of the newest message


def as_chat(messages: Sequence[Message]) -> list[dict[str, str]]:
    return [{"role": m.role.value, "content": m.content} for m in messages]


def fit(
    context: Sequence[Message],
    budget: int,
    render: Render,
    tokenize: Tokenize,
    detokenize: Detokenize,
) -> FittedPrompt:
    """The longest suffix of `context` whose prompt has at most `budget` tokens.

    Prompt length grows with every message kept, so a binary search over how
    many to drop needs only a handful of renders, each exact.
    """
    chat = as_chat(context)
    if not chat:
        return FittedPrompt(render([]), 0, 0, 0)
    whole = render(chat)
    if len(whole.tokens) <= budget:
        return FittedPrompt(whole, len(chat), 0, 0)
    low, high = 1, len(chat) - 1  # drop at least 1, at most all but the newest
    best: ChatPrompt | None = None
    best_drop = len(chat) - 1
    while low <= high:
        drop = (low + high) // 2
        prompt = render(chat[drop:])
        if len(prompt.tokens) <= budget:
            best, best_drop, high = prompt, drop, drop - 1
        else:
            low = drop + 1
    if best is not None:
        return FittedPrompt(best, len(chat) - best_drop, best_drop, 0)
    return _trim_newest(chat[-1], len(chat) - 1, budget, render, tokenize, detokenize)


def _trim_newest(
    newest: dict[str, str],
    dropped: int,
    budget: int,
    render: Render,
    tokenize: Tokenize,
    detokenize: Detokenize,
) -> FittedPrompt:
    tokens = tokenize(newest["content"])
    overhead = len(render([{**newest, "content": ""}]).tokens)
    keep = max(budget - overhead, 0)
    while True:
        tail = detokenize(tokens[len(tokens) - keep :] if keep else []).decode("utf-8", "ignore")
        prompt = render([{**newest, "content": tail}])
        if len(prompt.tokens) <= budget or keep == 0:
            return FittedPrompt(prompt, 1, dropped, len(tokens) - keep)
        keep = max(keep - (len(prompt.tokens) - budget), 0)  # re-tokenizing can merge differently
