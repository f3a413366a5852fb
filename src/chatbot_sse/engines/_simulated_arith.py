"""Safe arithmetic for the simulated bot: find an expression in a message, evaluate it exactly.

The user's text is never handed to `eval`: a tiny recursive-descent parser
accepts numbers, `+ - * / % ^ **` and parentheses, nothing else. Values are
`Fraction`s, so `0.1 + 0.2` is `0.3` and the answer is the same on every
machine. Inputs are bounded (expression length, size of every intermediate
value) so that "9^9^9" costs microseconds rather than a worker.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = ["ArithmeticProblem", "Calculation", "calculate", "find_expression"]

MAX_EXPRESSION_CHARS = 120
MAX_BITS = 512  # of a numerator or denominator: about 154 decimal digits

_WORD_OPERATORS = (
    (re.compile(r"\bmultiplied\s+by\b|\btimes\b"), "*"),
    (re.compile(r"\bdivided\s+by\b"), "/"),
    (re.compile(r"\bplus\b"), "+"),
    (re.compile(r"\bminus\b"), "-"),
    (re.compile(r"\bto\s+the\s+power\s+of\b"), "^"),
    (re.compile(r"\bsquared\b"), "^2"),
    (re.compile(r"\bcubed\b"), "^3"),
    (re.compile(r"\bmod(?:ulo)?\b"), "%"),
    (re.compile(r"(?<=\d)\s*x\s*(?=[\d(])"), "*"),
)
# multiplication sign, division sign, minus sign, en dash
_SYMBOLS = str.maketrans({"\u00d7": "*", "\u00f7": "/", "\u2212": "-", "\u2013": "-"})
_CANDIDATE = re.compile(r"[-+*/%^().\d\s]+")
_CUE = re.compile(r"\?|=|^(?:what|whats|calculate|compute|evaluate|solve|how\s+much)\b")
_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?|\.\d+)|(\*\*|[-+*/%^()]))")
_DISPLAY = {"*": "\u00d7", "/": "\u00f7", "**": "^", "%": "mod"}
_DIGIT = re.compile(r"\d")


class ArithmeticProblem(Exception):
    """The expression parsed but has no answer worth showing (division by zero, too large)."""


class Calculation:
    """An evaluated expression: its tidy display form and its value."""

    __slots__ = ("display", "value")

    def __init__(self, display: str, value: Fraction) -> None:
        self.display = display
        self.value = value

    def result(self) -> str:
        """`= 84`, `= 3.5` or `≈ 0.3333333333`: exact when ten significant digits say it all."""
        if self.value.denominator == 1:
            return f"= {self.value.numerator}"
        shown = format(float(self.value), ".10g")
        return f"= {shown}" if Fraction(shown) == self.value else f"≈ {shown}"


def find_expression(text: str) -> str | None:
    """The arithmetic in `text` (lower-cased), or None if the user isn't asking for a sum.

    A question cue ("what is", "?", "=") is required unless the message is
    nothing but the expression, so "I run 3-4 times a week" stays a statement.
    """
    if len(text) > 4 * MAX_EXPRESSION_CHARS or not _DIGIT.search(text):
        return None  # an operation combines two numbers, and a number has a digit ("squared"
        # and "cubed" bring one only when another was written): most messages end here
    converted = text.translate(_SYMBOLS)
    for pattern, symbol in _WORD_OPERATORS:
        converted = pattern.sub(symbol, converted)
    best: str | None = None
    for match in _CANDIDATE.finditer(converted):
        candidate = match.group().strip()
        longer = best is None or len(candidate) > len(best)
        if longer and len(candidate) <= MAX_EXPRESSION_CHARS and _is_operation(candidate):
            best = candidate
    if best is None:
        return None
    whole = converted.strip(" ?!.=")
    if best != whole and not _CUE.search(converted):
        return None
    return best


def calculate(expression: str) -> Calculation:
    """Evaluate `expression`; ValueError if it doesn't parse, ArithmeticProblem if it has no answer."""
    return _Parser(_tokenize(expression)).parse()


def _is_operation(candidate: str) -> bool:
    """Parses, and combines at least two numbers: "12" or "-19" alone is not a question."""
    try:
        tokens = _tokenize(candidate)
        if sum(1 for kind, _ in tokens if kind == "num") < 2:
            return False
        _Parser(tokens).parse()
    except ValueError:
        return False
    except ArithmeticProblem:
        pass  # a real question with a sad answer, still worth answering
    return True


def _tokenize(expression: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    expression = expression.rstrip()
    while position < len(expression):
        match = _TOKEN.match(expression, position)
        if match is None:
            raise ValueError(f"unexpected character at {position}")
        number, operator = match.groups()
        tokens.append(("num", number) if number is not None else ("op", operator))
        position = match.end()
    return tokens


def _checked(value: Fraction) -> Fraction:
    if max(value.numerator.bit_length(), value.denominator.bit_length()) > MAX_BITS:
        raise ArithmeticProblem("the result is too large for me to show")
    return value


class _Parser:
    """expr := term (('+'|'-') term)*; term := unary (('*'|'/'|'%') unary)*;
    unary := ('-'|'+') unary | power; power := atom (('^'|'**') unary)?;
    atom := number | '(' expr ')'. Power binds tighter than unary minus, as in Python.
    """

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.position = 0

    def parse(self) -> Calculation:
        if not self.tokens:
            raise ValueError("empty expression")
        display, value = self._expr()
        if self.position != len(self.tokens):
            raise ValueError("trailing tokens")
        return Calculation(display, value)

    def _peek(self) -> str | None:
        if self.position < len(self.tokens):
            kind, text = self.tokens[self.position]
            return text if kind == "op" else None
        return None

    def _take(self) -> tuple[str, str]:
        if self.position >= len(self.tokens):
            raise ValueError("unexpected end")
        token = self.tokens[self.position]
        self.position += 1
        return token

    def _expr(self) -> tuple[str, Fraction]:
        display, value = self._term()
        while (op := self._peek()) in ("+", "-"):
            self.position += 1
            right_display, right = self._term()
            value = _checked(value + right if op == "+" else value - right)
            display = f"{display} {op} {right_display}"
        return display, value

    def _term(self) -> tuple[str, Fraction]:
        display, value = self._unary()
        while (op := self._peek()) in ("*", "/", "%"):
            self.position += 1
            right_display, right = self._unary()
            if right == 0 and op != "*":
                raise ArithmeticProblem("dividing by zero isn't defined")
            if op == "*":
                value = value * right
            elif op == "/":
                value = value / right
            else:
                value = value % right
            value = _checked(value)
            display = f"{display} {_DISPLAY[op]} {right_display}"
        return display, value

    def _unary(self) -> tuple[str, Fraction]:
        if (op := self._peek()) in ("-", "+"):
            self.position += 1
            display, value = self._unary()
            return f"{op}{display}" if op == "-" else display, -value if op == "-" else value
        return self._power()

    def _power(self) -> tuple[str, Fraction]:
        display, base = self._atom()
        if self._peek() in ("^", "**"):
            self.position += 1
            exponent_display, exponent = self._unary()
            return f"{display}^{exponent_display}", _power(base, exponent)
        return display, base

    def _atom(self) -> tuple[str, Fraction]:
        kind, text = self._take()
        if kind == "num":
            return text, Fraction(text)
        if text == "(":
            display, value = self._expr()
            if self._take() != ("op", ")"):
                raise ValueError("unbalanced parenthesis")
            return f"({display})", value
        raise ValueError(f"unexpected {text!r}")


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if base == 0 and exponent < 0:
        raise ArithmeticProblem("dividing by zero isn't defined")
    if exponent.denominator == 1:
        trivial = base.denominator == 1 and abs(base.numerator) <= 1
        size = max(base.numerator.bit_length(), base.denominator.bit_length())
        if not trivial and size * abs(exponent.numerator) > MAX_BITS:
            raise ArithmeticProblem("the result is too large for me to show")
        return _checked(base**exponent.numerator)
    try:
        result = float(base) ** float(exponent)
    except OverflowError:
        raise ArithmeticProblem("the result is too large for me to show") from None
    if isinstance(result, complex):
        raise ArithmeticProblem("that has no real-number answer")
    return _checked(Fraction(result))
