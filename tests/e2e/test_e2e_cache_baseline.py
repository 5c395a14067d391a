"""A skipped run followed by a strong call, through a real Envoy with the official SDK and the
simulated providers (which cache prompts as the real ones do, sim/cache.py): each request is
metered from the usage the providers report, and its baseline is what the strong model alone
would have cost, its cache as it would have been had every turn gone to it (docs/metrics.md).

The conversation (Claude Code's shape: breakpoints on the system blocks and the newest user
block, 5-minute TTL): a long first turn (direct), two short ones (skipped: the draft answers),
a long one (direct). P1..P4 are the prompts' sizes, o1..o4 the answers'. By the cache model:
- turn 1, direct: writes P1; its baseline is itself.
- turns 2, 3, skipped: the draft (DeepSeek-like, automatic caching) misses everything on its
  first call, then reads turn 2's prompt. Baseline: the strong model would have read P1 (then
  P2) and written the rest.
- turn 4, direct: the real strong cache still holds P1 (read) and writes everything since,
  the skipped turns' content included (P4 − P1); the baseline reads P3 and writes P4 − P3.
Summed, the baselines are the all-strong bill; the saving is what the skips saved, not their writes.
"""
import anthropic
import pytest

from claude_code import as_history, request
from stack import CLIENT_KEY, stack_fixture
from test_e2e_observability import request_lines

RULES = [{"name": "short-text", "when": {"last_turn": "user_text", "last_turn_tokens": {"lt": 30}}, "route": "skipped"},
         {"name": "the-rest", "route": "direct"}]
stack = stack_fixture("cache-baseline", extra_config={"router": {"rules": RULES}})

SONNET = {"input": 2, "output": 10, "cache_write": 2.5, "cache_read": 0.2}  # claude-sonnet-5*, USD/MTok
DRAFT = {"input": 0.27, "output": 1.10, "cache_read": 0.07}  # sim-draft-*
LONG = ("Refactor the payment module so retries are idempotent. Explain the trade-offs between idempotency "
        "keys and exactly-once queues, then propose the smallest safe change, with tests. ") * 3


def usd(prices, **tokens):
    return sum(prices[k] * v for k, v in tokens.items()) * 1e-6


def prompt(t):
    return t["input"] + t["cache_read"] + t["cache_write"]


def test_a_skipped_run_then_a_strong_call_is_metered_and_baselined_as_the_model_says(stack):
    client = anthropic.Anthropic(base_url=stack.anthropic_url, api_key=CLIENT_KEY, max_retries=0)
    history, paths = [], []
    for turn, text in enumerate((LONG, "ok, go on", "and then?", LONG + " Now write it.")):
        history.append({"role": "user", "content": text})
        body = request(history, thinking=False)
        body["extra_headers"] = {**body["extra_headers"], "x-request-id": f"cache-turn-{turn}"}
        raw = client.messages.with_raw_response.create(**body)
        paths.append(raw.headers["x-cascade-path"])
        history.append(as_history(raw.parse()))
        # One turn settled before the next: a direct answer's usage comes with Envoy's access
        # log (batched, up to 0.1 s later), and the conversation's caches settle in the order
        # records finish (docs/metrics.md says what an overtaking turn does to the baselines).
        assert len(request_lines(stack, turn + 1)) == turn + 1
    assert paths == ["direct", "skipped", "skipped", "direct"]
    # In request order: a direct answer's line comes with Envoy's access log, up to 0.1 s later.
    lines = sorted(request_lines(stack, 4), key=lambda x: x["request_id"])
    assert [x["request_id"] for x in lines] == [f"cache-turn-{t}" for t in range(4)]
    assert [x["path"] for x in lines] == paths
    s1, d2, d3, s4 = (lines[0]["tokens"]["strong"], lines[1]["tokens"]["draft"], lines[2]["tokens"]["draft"],
                      lines[3]["tokens"]["strong"])
    p1, p2, p3, p4 = prompt(s1), prompt(d2), prompt(d3), prompt(s4)
    assert p1 < p2 < p3 < p4
    # Metered: what the providers reported is what the cache model expects.
    assert (s1["cache_read"], s1["cache_write"]) == (0, p1)  # a new conversation: all written
    assert d2["cache_read"] == 0 and d2["input"] == p2  # the draft's first call: all misses
    assert d3["cache_read"] == p2 and d3["input"] == p3 - p2  # then its own cache: turn 2's prompt
    assert (s4["cache_read"], s4["cache_write"]) == (p1, p4 - p1)  # the skipped turns written now
    # Costs: the providers' usage at their prices.
    c = [x["cost_usd"] for x in lines]
    assert c[0] == pytest.approx(usd(SONNET, cache_write=p1, output=s1["output"]))
    assert c[1] == pytest.approx(usd(DRAFT, input=p2, output=d2["output"]))
    assert c[2] == pytest.approx(usd(DRAFT, cache_read=p2, input=p3 - p2, output=d3["output"]))
    assert c[3] == pytest.approx(usd(SONNET, cache_read=p1, cache_write=p4 - p1, output=s4["output"]))
    # Baselines: the counterfactual strong cache, turn by turn.
    b = [x["baseline_usd"] for x in lines]
    assert b[0] == pytest.approx(c[0])
    assert b[1] == pytest.approx(usd(SONNET, cache_read=p1, cache_write=p2 - p1, output=d2["output"]))
    assert b[2] == pytest.approx(usd(SONNET, cache_read=p2, cache_write=p3 - p2, output=d3["output"]))
    assert b[3] == pytest.approx(usd(SONNET, cache_read=p3, cache_write=p4 - p3, output=s4["output"]))
    # The saving: the skipped turns' strong reads and answers, less the draft's cost. Their writes
    # are paid anyway, at turn 4, where those P3 − P1 tokens are written instead of read (so
    # turn 4 reads that much less than the baseline's): no saving claimed on them.
    saved = sum(b) - sum(c)
    skipped_reads_and_answers = usd(SONNET, cache_read=p1 + p2, output=d2["output"] + d3["output"])
    assert saved == pytest.approx(skipped_reads_and_answers + usd(SONNET, cache_read=p3 - p1) - c[1] - c[2])
