"""Is the draft looping? A repetition detector on its text (pure).

Small models degenerate: greedy decoding falls into a cycle ("la la la ...", a sentence, a few
lines, again and again) and never stops on its own. What such text has that real text does not:
over its last stretch, the same few n-grams, over and over. So the detector keeps the last
`window` tokens (words, runs of ASCII punctuation, any other symbol alone; a token longer than 8
characters in pieces of 8, so a loop with no space in it, "🌍🌍🌍…" or "aaaa…", has tokens
too) and, every `every` new tokens once it has seen
`min_tokens`, counts the distinct `ngram`-grams in that window: a cycle of p tokens makes at most p
of them, real prose and code nearly one per position. At most `max_distinct` of the window's
n-grams distinct: the draft is looping.

With the defaults: a one-word loop is caught at 256 tokens, a 40-token sentence said 20 times is
(at its 7th time); after a long good start, once the cycle fills about three quarters of the
window. A short repetition ("yes yes") never is (no verdict under 256 tokens), nor is a list of
distinct items (each item makes new n-grams). Real text stays far above the line: the lowest
share in any window of the 642 assistant blocks of the Claude Code sessions in the tuning set
(texts and tool-call arguments, files written whole among them) is 0.45, of this repository's
files 0.38 (a Grafana dashboard's JSON); the line is 0.25. What it would take for real text:
hundreds of tokens of the same few (a long run of identical array entries). What it cannot see:
a cycle longer than a quarter of the window (whole paragraphs repeated), which the output budget
and the time limit bound instead.

Fed as the text comes (a stream's deltas, split anywhere: a word cut in two is joined first), or
whole (`looping`, `looping_answer`): the same checks at the same points either way.
"""
from __future__ import annotations

import collections
import json
import re
from dataclasses import dataclass

from cascade_extproc.types import Response

# Words, runs of ASCII punctuation (code's `->`, `==`, `}}`), and any other symbol on its own: an
# emoji or a CJK mark said again and again with no space between is a loop too (a local SmolLM2
# draft, asked "Say hi", ended in hundreds of 🌍). A token longer than _LONGEST (a run of one
# character, a CJK sentence with no spaces) is judged in pieces of that length from its start.
_TOKEN = re.compile(r"\w+|[!-/:-@\[-`{-~]+|[^\w\s]")
_LONGEST = 8
# Tool-call arguments arrive as JSON text: judged unescaped, so code's escaped newlines and quotes
# read as what they are (escaped, every indented line starts with the same `\n` and spaces).
_ESCAPE = re.compile(r'\\(["\\/bfnrt])')
_UNESCAPED = {'"': '"', "\\": "\\", "/": "/", "b": " ", "f": " ", "n": "\n", "r": "\r", "t": "\t"}


@dataclass(frozen=True)
class Limits:
    window: int = 1024  # tokens: the last stretch of text judged
    min_tokens: int = 256  # no verdict on less text than this
    ngram: int = 6  # tokens per n-gram
    max_distinct: float = 0.25  # looping: at most this share of the window's n-grams distinct
    every: int = 32  # judged again after this many new tokens


class RepetitionDetector:
    """Feed the draft's text as it comes; `tripped` once it loops (and stays so)."""

    def __init__(self, limits: Limits = Limits()):
        self.limits = limits
        self._window: collections.deque[str] = collections.deque(maxlen=limits.window)
        self._partial = ""  # the last token of the last piece, which the next piece may continue
        self._escape = ""  # JSON text: a backslash that ended the last piece, its escape not yet seen
        self._since = 0
        self.tokens = 0  # tokens seen (an estimate of the draft's output tokens)
        self.tripped = False

    def feed(self, text: str, json_text: bool = False) -> bool:
        """Add `text` (`json_text`: a piece of a tool call's JSON arguments); True when looping."""
        if self.tripped or not text:
            return self.tripped
        if json_text:
            text = self._escape + text
            odd = (len(text) - len(text.rstrip("\\"))) % 2
            text, self._escape = (text[:-1], "\\") if odd else (text, "")
            text = _ESCAPE.sub(lambda m: _UNESCAPED[m.group(1)], text)
        text = self._partial + text
        tokens = _TOKEN.findall(text)
        # A piece that ends inside a token (no space or punctuation after it) may go on next time;
        # its whole pieces of _LONGEST characters are final already.
        partial = tokens.pop() if tokens and not text[-1].isspace() and text.endswith(tokens[-1]) else ""
        whole = len(partial) - len(partial) % _LONGEST
        self._partial = partial[whole:]
        if whole:
            tokens.append(partial[:whole])
        for token in tokens:
            for i in range(0, len(token), _LONGEST):
                self._add(token[i:i + _LONGEST])
                if self.tripped:
                    return True
        return self.tripped

    def end(self) -> bool:
        """No more text: judge the last token too."""
        if self._partial and not self.tripped:
            self._add(self._partial)  # shorter than _LONGEST: whole pieces went already
        self._partial = ""
        return self.tripped

    def _add(self, token: str) -> None:
        self._window.append(token)
        self.tokens += 1
        self._since += 1
        lim = self.limits
        if self._since >= lim.every and len(self._window) >= lim.min_tokens:
            self._since = 0
            self.tripped = _distinct_share(list(self._window), lim.ngram) <= lim.max_distinct


def _distinct_share(tokens: list[str], n: int) -> float:
    grams = len(tokens) - n + 1
    if grams <= 0:
        return 1.0
    return len(set(zip(*(tokens[i:i + grams] for i in range(n))))) / grams


def looping(text: str, limits: Limits = Limits()) -> bool:
    """A whole text: does it loop anywhere (judged as if it had been streamed)?"""
    d = RepetitionDetector(limits)
    d.feed(text)
    return d.end()


def looping_answer(resp: Response, limits: Limits = Limits()) -> bool:
    """A whole answer: its text, or any tool call's arguments, loops. The draft's reasoning is not
    judged: it is never served (a reasoning loop that never ends is bounded by the output budget)."""
    for block in resp.blocks:
        if block.type == "text" and looping(block.text, limits):
            return True
        if block.type == "tool_use":
            d = RepetitionDetector(limits)
            d.feed(json.dumps(block.input, ensure_ascii=False), json_text=True)
            if d.end():
                return True
    return False
