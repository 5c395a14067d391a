"""Each path on its own, without gRPC or a network: providers.mock answers, and each test reads
what the path hands the shell (extproc/paths/base.py: the response for Envoy, the facts to record,
the answer side, or a fallback)."""
from __future__ import annotations

import asyncio
import dataclasses
import re

import pytest

from cascade_extproc import app, codecs, config
from cascade_extproc._proto import external_processor_pb2 as ep
from cascade_extproc.extproc.paths import CascadePath, Facts, FallBack, Pending, ShadowPath, SkipPath, Taken
from cascade_extproc.extproc.response import ResponseSide
from cascade_extproc.metering.ledger import Ledger, RequestRecord
from cascade_extproc.metering.metrics import Metrics
from cascade_extproc.providers import ProviderStatus
from cascade_extproc.providers.mock import FakeProvider
from cascade_extproc.types import Api, Block, Decision, Path, Response, Route, StopReason, Usage

RAW = b'{"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "Explain closures."}]}'
CLIENT = {"x-api-key": "client-key", "anthropic-version": "2023-06-01"}


def answer(text: str, model: str, output_tokens: int = 5) -> Response:
    return Response(id="id", model=model, blocks=[Block("text", text=text)], stop_reason=StopReason.END_TURN,
                    usage=Usage(input_tokens=10, output_tokens=output_tokens))


def accepting(body):
    return answer(f"ACCEPT {re.search(r'nonce=([0-9a-f]+)', body['messages'][-1]['content'][-1]['text']).group(1)}",
                  "strong-model", 3)


def runtime(draft=None, strong=None, **cascade):
    cfg = config.load()
    cfg = dataclasses.replace(cfg, cascade=dataclasses.replace(cfg.cascade, **cascade))
    rt = app.runtime_from(cfg, None)
    rt.providers[(Api.ANTHROPIC, "draft")] = draft or FakeProvider(lambda b: answer("Draft.", "draft-model"))
    rt.providers[(Api.ANTHROPIC, "strong")] = strong or FakeProvider(accepting)
    return rt


def take(path_cls, rt, route=Route.CASCADE, reports=None) -> Taken | Pending:
    req = codecs.parse_request(Api.ANTHROPIC, RAW, CLIENT)
    report = (lambda facts, status: reports.append((facts, status))) if reports is not None else None
    return path_cls(rt, Ledger(Metrics()), report).take(req, Decision(route, "rule", {}), "sidecar-key")


def finish(step: Taken | Pending) -> Taken:
    assert isinstance(step, Pending)
    return asyncio.run(_run(step))


async def _run(step: Pending) -> Taken:
    return await step.run()


def path_header(resp: ep.ProcessingResponse) -> str:
    return {h.header.key: h.header.raw_value.decode() for h in resp.immediate_response.headers.set_headers}[
        "x-cascade-path"]


def test_cascade_accepted_answers_with_the_draft_and_records_both_calls():
    draft, strong = FakeProvider(lambda b: answer("Draft.", "draft-model")), FakeProvider(accepting)
    rt = runtime(draft, strong)
    step = take(CascadePath, rt)
    assert isinstance(step, Pending) and step.wait_s == rt.cfg.cascade.draft_timeout_s + rt.cfg.cascade.verify_timeout_s + 5
    taken = finish(step)
    assert taken.status == 200 and taken.answer is None
    assert taken.facts == Facts(Path.ACCEPTED, rt.cfg.providers.anthropic.draft.model,
                                {"draft": draft_usage(), "strong": Usage(input_tokens=10, output_tokens=3)})
    assert path_header(taken.response) == "accepted" and b"Draft." in taken.response.immediate_response.body
    (_, draft_headers, _), (_, strong_headers, _) = draft.calls[0], strong.calls[0]
    assert draft_headers["x-api-key"] == "sidecar-key" and strong_headers["x-api-key"] == "client-key"


def draft_usage() -> Usage:
    return Usage(input_tokens=10, output_tokens=5)


def test_cascade_enhanced_answers_with_the_strong_models_own():
    taken = finish(take(CascadePath, runtime(strong=FakeProvider(lambda b: answer("Mine.", "strong-model")))))
    assert taken.facts.path is Path.ENHANCED and taken.facts.served_model == "strong-model"
    assert path_header(taken.response) == "enhanced"


def test_cascade_failures_fall_back_with_the_stage_as_the_reason():
    with pytest.raises(FallBack) as info:
        finish(take(CascadePath, runtime(draft=FakeProvider(error=ProviderStatus(529)))))
    assert info.value.reason == "draft-failed"
    with pytest.raises(FallBack) as info:
        finish(take(CascadePath, runtime(strong=FakeProvider(error=ProviderStatus(500)))))
    assert info.value.reason == "verify-failed"


def test_a_cascade_draft_out_of_its_budget_falls_back_with_what_it_cost():
    """RAW asks for 64 tokens: a budget of 32 is ours, and a draft that stops for length failed."""
    cut = Response("id", "draft-model", [Block("text", text="Half an")], StopReason.MAX_TOKENS, Usage(10, 32))
    draft = FakeProvider(lambda b: cut)
    rt = runtime(draft=draft, draft_max_tokens=32)
    with pytest.raises(FallBack) as info:
        finish(take(CascadePath, rt, reports=[]))
    assert (info.value.reason, info.value.usage) == ("draft-budget", {"draft": Usage(10, 32)})
    assert draft.calls[0][0]["max_tokens"] == 32


def test_cascade_serve_draft_when_only_verification_failed():
    rt = runtime(strong=FakeProvider(error=ProviderStatus(500)), on_verify_failure="serve_draft")
    taken = finish(take(CascadePath, rt))
    assert taken.facts == Facts(Path.SKIPPED, rt.cfg.providers.anthropic.draft.model, {"draft": draft_usage()},
                                fallback_reason="verify-failed-served-draft")
    assert taken.status == 200 and path_header(taken.response) == "skipped"


def test_cascade_overloaded_falls_back_before_asking_for_time():
    rt = runtime(max_concurrent=1)

    async def main():
        async with rt.cascade_slots:
            take(CascadePath, rt)
    with pytest.raises(FallBack) as info:
        asyncio.run(main())
    assert info.value.reason == "overload"


def test_skip_hands_the_request_to_the_relay_under_a_ticket():
    rt, reports = runtime(), []
    taken = take(SkipPath, rt, Route.SKIPPED, reports)
    assert isinstance(taken, Taken) and taken.status == 0 and len(rt.relay) == 1
    md = taken.response.dynamic_metadata.fields["cascade"].struct_value.fields
    assert md["route"].string_value == "relay" and md["path"].string_value == "skipped"
    assert taken.facts == Facts(Path.SKIPPED, rt.cfg.providers.anthropic.draft.model)
    call = rt.relay.discard(md["ticket"].string_value)
    assert call is not None and call.draft_headers["x-api-key"] == "sidecar-key"
    # The relay reports what happened when it is done; the shell records it.
    call.path, call.status, call.usage["draft"] = Path.SKIPPED, 200, draft_usage()
    call.on_done(call)
    assert reports == [(Facts(Path.SKIPPED, call.served_model, {"draft": draft_usage()}), 200)]


def test_a_ticket_never_taken_is_recorded_as_the_client_gone():
    rt = runtime()
    watch = take(SkipPath, rt, Route.SKIPPED, []).answer
    rec = RequestRecord("id", "anthropic", Path.SKIPPED, "rule", "m")
    assert watch.settle(rec) and rec.error == "client-gone" and watch.status == 499 and len(rt.relay) == 0


def test_the_relay_unreachable_the_strong_model_answers_from_here():
    strong = FakeProvider(lambda b: answer("Strong.", "strong-model"))
    rt = runtime(strong=strong)
    watch = take(SkipPath, rt, Route.SKIPPED, []).answer
    headers = ep.HttpHeaders(headers={"headers": [{"key": ":status", "raw_value": b"503"}]})
    step = watch.on_headers(headers)
    assert isinstance(step, Pending) and step.facts == Facts(Path.FALLBACK, fallback_reason="relay-http-503")
    taken = finish(step)
    assert taken.status == 200 and path_header(taken.response) == "fallback"
    assert taken.facts == Facts(Path.FALLBACK, "strong-model", {"strong": draft_usage()}, "relay-http-503")
    assert strong.calls[0][1]["x-api-key"] == "client-key" and len(rt.relay) == 0


def test_shadow_changes_nothing_and_records_what_would_have_happened():
    taken = take(ShadowPath, runtime(), Route.SKIPPED)
    assert taken.facts == Facts(Path.DIRECT, shadow_route="skipped") and taken.status == 0
    # Not sampled: nothing here reads the answer; Envoy meters it (its access log brings the usage).
    assert taken.answer is None and taken.meter
    assert taken.response.request_body.response == ep.CommonResponse()
