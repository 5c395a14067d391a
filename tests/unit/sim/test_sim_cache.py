"""The simulated providers' prompt cache, by hand: what a real provider would read and write."""
from cascade_extproc.sim.cache import Block, CacheUse, SimCache, anthropic_blocks, openai_blocks


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def prompt(n, ttl=300.0):
    """n blocks of 100 tokens, the last one a breakpoint (as Claude Code marks its last message)."""
    return [Block(f"b{i}", 100, ttl if i == n - 1 else None) for i in range(n)]


def test_explicit_writes_at_the_breakpoint_then_reads_it_and_writes_the_rest():
    clock = Clock()
    c = SimCache("explicit", clock=clock)
    assert c.use("m", prompt(3)) == CacheUse(write_5m=300)
    clock.t = 60
    assert c.use("m", prompt(5)) == CacheUse(read=300, write_5m=200)  # two turns later: both written
    assert c.use("other-model", prompt(5)) == CacheUse(write_5m=500)  # each model its own cache
    assert c.use("m", [Block("b0", 100), Block("b1", 100)]) == CacheUse()  # no breakpoint, no caching


def test_explicit_entries_expire_past_their_ttl_and_a_hit_refreshes_them():
    clock = Clock()
    c = SimCache("explicit", clock=clock)
    c.use("m", prompt(3))
    clock.t = 250
    assert c.use("m", prompt(3)) == CacheUse(read=300)  # refreshed at 250
    clock.t = 500
    assert c.use("m", prompt(4)) == CacheUse(read=300, write_5m=100)
    clock.t = 801  # 301 s idle
    assert c.use("m", prompt(4)) == CacheUse(write_5m=400)  # cold: the whole prefix again


def test_a_one_hour_breakpoint_writes_at_the_1h_rate_and_lasts():
    clock = Clock()
    c = SimCache("explicit", clock=clock)
    assert c.use("m", prompt(2, ttl=3600.0)) == CacheUse(write_1h=200)
    clock.t = 3000
    assert c.use("m", prompt(3, ttl=3600.0)) == CacheUse(read=200, write_1h=100)


def test_automatic_reads_the_longest_cached_prefix_and_never_writes():
    clock = Clock()
    c = SimCache("automatic", ttl_s=3600, clock=clock)
    plain = [Block(f"b{i}", 100) for i in range(4)]
    assert c.use("m", plain[:2]) == CacheUse()
    assert c.use("m", plain) == CacheUse(read=200)
    assert c.use("m", plain[:1] + [Block("changed", 100)]) == CacheUse(read=100)
    clock.t = 3601 + 0
    assert c.use("m", plain) == CacheUse(read=0)


def test_blocks_of_real_bodies():
    ntok = lambda s: len(s.split())  # noqa: E731
    body = {"system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
            "messages": [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": "a b c"},
                {"type": "text", "text": "go on", "cache_control": {"type": "ephemeral"}}]}]}
    blocks = anthropic_blocks(body, ntok)
    assert [(b.tokens, b.ttl_s) for b in blocks] == [(2, 3600.0), (3, None), (2, 300.0)]
    o = openai_blocks({"messages": [{"role": "system", "content": "be brief"},
                                    {"role": "assistant", "content": None, "tool_calls": [
                                        {"function": {"name": "f", "arguments": "x y"}}]}]}, ntok)
    assert [b.tokens for b in o] == [2, 2]
