"""Executable checks of an answer: each returns a Verdict (passed, and why not).

- code: the answer's Python (its last fenced block, else the whole answer) runs with the task's
  unit tests appended, in the sandbox (sandbox.py); it passes when the tests exit 0.
- math: the answer's final number (after "answer:", in \\boxed{}, after ####, else the last
  number written) equals the exact answer, as a fraction (0.5 == 1/2).
- instruct: rule checkers, all of which must hold (word counts, case, bullets, JSON keys, ...).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

from cascade_extproc.offline.eval import sandbox


@dataclass(frozen=True)
class Verdict:
    passed: bool
    detail: str = ""


Check = Callable[[str], Verdict]

PASS = Verdict(True)
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.S)


def extract_code(answer: str) -> str:
    """The last fenced Python block (or unlabeled one), else the whole answer."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(answer)]
    python = [b for lang, b in blocks if lang in ("python", "py", "python3", "")]
    if python:
        return python[-1]
    return answer if not blocks else blocks[-1][1]


def code(tests: str, timeout: float = 10.0) -> Check:
    def check(answer: str) -> Verdict:
        source = extract_code(answer).rstrip() + "\n\n# --- the task's tests ---\n" + tests.strip() + "\n"
        outcome = sandbox.run_python(source, timeout=timeout)
        return PASS if outcome.ok else Verdict(False, outcome.summary())
    return check


_NUMBER = r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?"
_MARKED = [re.compile(p, re.I) for p in (
    r"\\boxed\{\s*(" + _NUMBER + r")\s*\}", r"####\s*(" + _NUMBER + r")",
    r"answer\s*(?:is|:|=)?\s*\**\s*\$?(" + _NUMBER + r")")]


def final_number(answer: str) -> Fraction | None:
    """The number the answer gives as final: a marked one (the last mark), else the last number."""
    for pattern in _MARKED:
        found = pattern.findall(answer)
        if found:
            return _fraction(found[-1])
    found = re.findall(_NUMBER, answer)
    return _fraction(found[-1]) if found else None


def _fraction(text: str) -> Fraction | None:
    try:
        return Fraction(text.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


def number(expected: int | str) -> Check:
    want = Fraction(str(expected))

    def check(answer: str) -> Verdict:
        got = final_number(answer)
        if got == want:
            return PASS
        return Verdict(False, f"expected {expected}, got {got if got is not None else 'no number'}")
    return check


# --- instruction following: rules, each (answer → None when it holds, else why not) ----------------

Rule = Callable[[str], str | None]


def all_of(*rules: Rule) -> Check:
    def check(answer: str) -> Verdict:
        broken = [why for rule in rules if (why := rule(answer))]
        return Verdict(not broken, "; ".join(broken))
    return check


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9']+", text)


def word_count(lo: int = 0, hi: int | None = None) -> Rule:
    def rule(a: str) -> str | None:
        n = len(words(a))
        if n < lo or (hi is not None and n > hi):
            return f"{n} words, wanted {lo}..{hi if hi is not None else ''}"
        return None
    return rule


def contains(*needles: str) -> Rule:
    def rule(a: str) -> str | None:
        gone = [n for n in needles if n.lower() not in a.lower()]
        return f"missing {gone}" if gone else None
    return rule


def lacks(*needles: str) -> Rule:
    def rule(a: str) -> str | None:
        found = [n for n in needles if n.lower() in a.lower()]
        return f"contains {found}" if found else None
    return rule


def lowercase(a: str) -> str | None:
    return None if a == a.lower() and words(a) else "not all lowercase"


def uppercase(a: str) -> str | None:
    return None if a == a.upper() and words(a) else "not all uppercase"


def no_commas(a: str) -> str | None:
    return "has a comma" if "," in a else None


def bullets(n: int) -> Rule:
    def rule(a: str) -> str | None:
        found = [line for line in a.splitlines() if re.match(r"\s*[-*•]\s+\S", line)]
        return None if len(found) == n else f"{len(found)} bullet points, wanted {n}"
    return rule


def lines(n: int) -> Rule:
    def rule(a: str) -> str | None:
        found = [line for line in a.strip().splitlines() if line.strip()]
        return None if len(found) == n else f"{len(found)} non-empty lines, wanted {n}"
    return rule


def starts_with(prefix: str) -> Rule:
    def rule(a: str) -> str | None:
        return None if a.strip().lower().startswith(prefix.lower()) else f"does not start with {prefix!r}"
    return rule


def ends_with(suffix: str) -> Rule:
    def rule(a: str) -> str | None:
        return None if a.strip().lower().endswith(suffix.lower()) else f"does not end with {suffix!r}"
    return rule


def json_object(*keys: str) -> Rule:
    """The answer (or its one fenced block) is a JSON object with exactly these keys."""
    def rule(a: str) -> str | None:
        text = a.strip()
        m = _FENCE.search(text)
        if m:
            text = m.group(2).strip()
        try:
            data = json.loads(text)
        except ValueError:
            return "not JSON"
        if not isinstance(data, dict):
            return "not a JSON object"
        if set(data) != set(keys):
            return f"keys {sorted(data)}, wanted {sorted(keys)}"
        return None
    return rule
