"""draft_checks: is a draft's answer one to serve? The piece the cascade, the skipped path and
(issue 16) the guarded path share."""
from __future__ import annotations

import json

import pytest

from cascade_extproc.cascade.draft_checks import BUDGET, DEGENERATE, DraftWatch, failed_draft, failure, limited
from cascade_extproc.types import (Api, Block, BlockDelta, BlockStart, Request, Response, StopReason, StreamEnd,
                                   Usage)

LOOP = "the same forty words again " * 400
PROSE = " ".join(f"item {i} is the {i}th of a list of distinct things, each with its own words" for i in range(300))


def req(api: Api, limit: int | None) -> Request:
    body: dict = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    if limit is not None:
        body["max_tokens"] = limit
    return Request(api, body, {}, json.dumps(body).encode())


def answer(text: str = "fine", stop: StopReason = StopReason.END_TURN, tool: dict | None = None) -> Response:
    blocks = [Block("text", text)] + ([Block("tool_use", id="t", name="write", input=tool)] if tool else [])
    return Response("id", "m", blocks, stop, Usage(output_tokens=10))


@pytest.mark.parametrize("api, limit, ours", [(Api.OPENAI, None, True), (Api.ANTHROPIC, 64000, True),
                                              (Api.ANTHROPIC, 8192, False), (Api.OPENAI, 100, False)])
def test_the_budget_is_ours_only_where_it_lowered_the_clients_limit(api, limit, ours):
    assert limited(req(api, limit), 8192) is ours
    assert limited(req(api, limit), None) is False  # no budget: nothing of ours


def test_whole_answers():
    r = req(Api.OPENAI, None)
    assert failed_draft(r, answer(), 8192, True) == ""
    assert failed_draft(r, answer(PROSE), 8192, True) == ""  # long, distinct: not a loop
    assert failed_draft(r, answer(LOOP), 8192, True) == DEGENERATE
    assert failed_draft(r, answer(LOOP), 8192, False) == ""  # the detector off
    assert failed_draft(r, answer("cut", StopReason.MAX_TOKENS), 8192, True) == BUDGET
    # The client's own limit stopped it: its answer, not a failure
    assert failed_draft(req(Api.OPENAI, 100), answer("cut", StopReason.MAX_TOKENS), 8192, True) == ""
    # A loop in a tool call's arguments (a file written as the same lines again and again)
    assert failure(answer(tool={"content": LOOP}), limited=False, detect_repetition=True) == DEGENERATE
    assert failure(answer(tool={"content": PROSE}), limited=False, detect_repetition=True) == ""


def test_a_stream_watched_as_it_comes():
    w = DraftWatch(limited=True, detect_repetition=True)
    assert w.see([BlockStart(0, Block("text"))]) == ""
    words = LOOP.split(" ")
    verdicts = [w.see([BlockDelta(0, "text", word + " ")]) for word in words]
    first = verdicts.index(DEGENERATE)
    assert 200 < first < 400 and all(v == DEGENERATE for v in verdicts[first:])
    assert w.usage(None).output_tokens >= first  # estimated from the text: the draft has not said
    assert w.usage(Usage(output_tokens=99_999)).output_tokens == 99_999  # its own count, where given

    w = DraftWatch(limited=True, detect_repetition=True)
    assert w.see([BlockDelta(0, "thinking", LOOP)]) == ""  # reasoning is never served, not judged
    assert w.see([BlockDelta(0, "json", json.dumps(PROSE)[1:-1])]) == ""
    assert w.see([StreamEnd(StopReason.MAX_TOKENS, Usage())]) == BUDGET
    assert DraftWatch(limited=False, detect_repetition=True).see([StreamEnd(StopReason.MAX_TOKENS, Usage())]) == ""
