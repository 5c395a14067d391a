"""The checks and the sandbox they run code in."""
from __future__ import annotations

import time
from fractions import Fraction

import pytest

from cascade_extproc.offline.eval import checks as c
from cascade_extproc.offline.eval import sandbox


@pytest.mark.parametrize("answer, number", [
    ("Answer: 42", 42), ("so the answer is 5/6.", Fraction(5, 6)), ("\\boxed{72}", 72),
    ("#### 1,234", 1234), ("It is 3, then 7 more: 10", 10), ("answer: -2.5", Fraction(-5, 2)),
    ("Answer: 12\nI double-checked the 3 steps.", 12), ("no digits here", None),
])
def test_final_number(answer, number):
    assert c.final_number(answer) == number


def test_number_compares_exactly_as_fractions():
    assert c.number("5/6")("Answer: 5/6").passed
    assert c.number(72)("Answer: 72.0").passed
    assert c.number("0.5")("Answer: 1/2").passed
    assert not c.number(72)("Answer: 72.1").passed


def test_extract_code_takes_the_last_python_block():
    answer = "First:\n```python\nx = 1\n```\nBetter:\n```python\nx = 2\n```\n"
    assert c.extract_code(answer).strip() == "x = 2"
    assert c.extract_code("```\ny = 3\n```").strip() == "y = 3"
    assert c.extract_code("def f(): pass") == "def f(): pass"


def test_code_check_runs_the_tests_in_a_subprocess():
    check = c.code("assert f() == 1")
    assert check("```python\ndef f():\n    return 1\n```").passed
    verdict = check("```python\ndef f():\n    return 2\n```")
    assert not verdict.passed and "AssertionError" in verdict.detail


def test_code_that_never_ends_is_killed_at_the_timeout():
    started = time.monotonic()
    verdict = c.code("assert True", timeout=1.0)("while True:\n    pass")
    assert not verdict.passed and verdict.detail == "timed out"
    assert time.monotonic() - started < 5


def test_the_sandbox_bounds_memory_and_isolates_the_directory(tmp_path):
    out = sandbox.run_python("x = bytearray(4 << 30)")
    assert not out.ok and "MemoryError" in out.stderr
    out = sandbox.run_python("import os; print(os.getcwd(), sorted(os.listdir('.')), os.environ.get('HOME'))",
                             files={"data.txt": "hi"})
    assert out.ok
    cwd, _, home = out.stdout.split(" ", 2)[0], None, out.stdout.split()[-1]
    assert "cascade-eval-" in cwd and home == cwd and "data.txt" in out.stdout


def test_the_sandbox_gets_no_secrets_from_the_environment(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-secret")
    out = sandbox.run_python("import os; print(sorted(os.environ))")
    assert "ANTHROPIC_API_KEY" not in out.stdout


@pytest.mark.parametrize("rule, good, bad", [
    (c.lowercase, "all lower here", "Not lower"),
    (c.uppercase, "HELLO", "Hello"),
    (c.no_commas, "no commas", "a, b"),
    (c.bullets(2), "- a\n* b", "- a"),
    (c.lines(2), "one\n\ntwo\n", "one"),
    (c.word_count(2, 3), "two words", "one"),
    (c.contains("cat"), "Cats", "dogs"),
    (c.lacks("sorry"), "fine", "Sorry!"),
    (c.starts_with("Dear team"), "  dear team, hi", "Hi dear team"),
    (c.ends_with("Best regards"), "bye. Best regards\n", "Best regards, bye"),
    (c.json_object("a"), '```json\n{"a": 1}\n```', '{"a": 1, "b": 2}'),
])
def test_rules(rule, good, bad):
    assert rule(good) is None
    assert rule(bad)


def test_all_of_names_every_broken_rule():
    v = c.all_of(c.lowercase, c.word_count(5))("Two Words")
    assert not v.passed and "lowercase" in v.detail and "2 words" in v.detail
