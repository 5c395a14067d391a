"""cascade/repetition.py: a looping draft is caught, real text is not, whole or streamed alike."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from cascade_extproc.cascade.repetition import Limits, RepetitionDetector, looping, looping_answer
from cascade_extproc.types import Block, Response, StopReason

ROOT = Path(__file__).resolve().parents[3]
# 40 tokens (words and punctuation runs), as a small model repeats a sentence it cannot leave.
PHRASE = ("I am happy to help you with that , and here is the answer that you asked for : the value "
          "is the same as it was before , so nothing has to change in the code for today . ")
WORDS = ("amber basin cedar delta ember fjord glacier harbor island juniper kelp lagoon meadow nebula orchid "
         "prairie quartz river summit tundra umber valley willow yarrow zephyr").split()


def answer(*blocks: Block) -> Response:
    return Response("id", "m", list(blocks), StopReason.END_TURN)


def test_the_phrase_is_forty_tokens():
    d = RepetitionDetector()
    d.feed(PHRASE)
    d.end()
    assert d.tokens == 40


def test_a_forty_token_phrase_repeated_twenty_times_loops():
    assert looping(PHRASE * 20)


def test_one_word_forever_loops_and_is_caught_early():
    d = RepetitionDetector()
    said = 0
    while not d.feed("la "):
        said += 1
    assert said < 300  # caught after min_tokens, not after the budget


def test_a_short_repetition_does_not():
    assert not looping("yes yes")
    assert not looping("Yes, yes, yes. " * 10)
    assert not looping("ok " * 200)  # still under min_tokens: no verdict on so little


def test_a_list_of_distinct_items_does_not():
    rng = random.Random(7)
    items = "\n".join(f"{i}. {rng.choice(WORDS).capitalize()} {rng.choice(WORDS)}: see section {i * 3}."
                      for i in range(1, 400))
    assert not looping(items)
    # The same items without numbers, as a bullet list of distinct names
    names = [f"{a}-{b}" for a in WORDS for b in WORDS][:500]
    assert not looping("\n".join(f"- `{n}`: {n.replace('-', ' ')} handler" for n in names))


def test_a_loop_after_a_good_start_is_caught():
    rng = random.Random(1)
    prose = " ".join(rng.choice(WORDS) for _ in range(600)) + ". "
    assert not looping(prose)
    # Once the loop fills about three quarters of the window: the good start dilutes it till then.
    assert not looping(prose + PHRASE * 18)
    assert looping(prose + PHRASE * 22)


def test_a_cycle_longer_than_the_window_allows_is_not_its_job():
    rng = random.Random(2)
    paragraph = " ".join(rng.choice(WORDS) for _ in range(400)) + ". "
    assert not looping(paragraph * 10)  # bounded by the output budget and the time limit instead


def test_streamed_in_any_pieces_it_trips_where_the_whole_text_does():
    text = "Sure. " + PHRASE * 20
    whole = RepetitionDetector()
    whole.feed(text)
    rng = random.Random(3)
    for _ in range(20):
        d, i = RepetitionDetector(), 0
        while i < len(text) and not d.tripped:
            n = rng.randint(1, 9)
            d.feed(text[i:i + n])
            i += n
        assert d.tripped
        assert d.tokens == whole.tokens  # words cut across pieces are joined, not counted twice


def test_tool_call_arguments_are_judged_unescaped():
    looping_file = {"path": "notes.txt", "content": "All work and no play makes Jack a dull boy.\n" * 100}
    assert looping_answer(answer(Block("tool_use", id="t", name="Write", input=looping_file)))
    # Streamed as JSON deltas split inside escapes: the same verdict
    raw = json.dumps(looping_file)
    d = RepetitionDetector()
    for i in range(0, len(raw), 7):
        d.feed(raw[i:i + 7], json_text=True)
    assert d.end()


def test_real_code_in_a_tool_call_does_not():
    code = (ROOT / "cascade_extproc" / "codecs" / "splice.py").read_text()
    assert not looping_answer(answer(Block("text", text="Writing it."),
                                     Block("tool_use", id="t", name="Write", input={"path": "a.py", "content": code})))


def test_only_text_and_tool_calls_are_judged_not_reasoning():
    assert looping_answer(answer(Block("text", text="la " * 400)))
    assert not looping_answer(answer(Block("thinking", text="la " * 400), Block("text", text="Hi.")))


@pytest.mark.parametrize("path", sorted(p for pattern in ("cascade_extproc/**/*.py", "docs/*.md", "tests/**/*.py",
                                                          "cascade_extproc/**/*.yaml", "k8s/**/*.json",
                                                          "k8s/**/*.yaml") for p in ROOT.glob(pattern)),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_this_repositorys_own_text_does_not(path):
    """Real prose, code, YAML and JSON (a Grafana dashboard: the most repetitive here)."""
    assert not looping(path.read_text(errors="replace"))


def test_the_limits_are_the_knobs():
    tight = Limits(window=64, min_tokens=16, every=8)
    assert looping("yes " * 40, tight)
    assert not looping("yes " * 40)


@pytest.mark.parametrize("start, unit", [
    ("Awwwwww, welcome to my world! 😎", "🌍"),  # what a local SmolLM2 draft said to "Say hi"
    ("Hello", "a"),  # one letter, no space ever
    ("你好。", "我很高兴帮助你"),  # a CJK sentence with no spaces, again and again
    ("x = ", "=+"),  # a run of ASCII punctuation that never ends
])
def test_a_loop_with_no_space_in_it_is_caught_too(start, unit):
    """No space, so no word ends: symbols count one by one, and an endless token in pieces."""
    text = start + unit * 3000
    assert looping(text)
    d = RepetitionDetector()  # streamed a unit at a time, as a model says it
    d.feed(start)
    for i in range(3000):
        if d.feed(unit):
            break
    assert d.tripped and i < 2500  # a one-letter run: 256 pieces of 8
    assert not looping(start + unit * 3)  # "🌍🌍🌍" at the end of a greeting is fine


def test_long_tokens_that_do_not_repeat_do_not():
    rng = random.Random(7)
    blob = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") for _ in range(20000))
    assert not looping(blob)  # base64, one token 20,000 characters long
    assert not looping(" ".join(f"{rng.getrandbits(128):032x}" for _ in range(500)))  # hashes
