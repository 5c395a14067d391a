"""With the ext_proc server gone, Envoy still gets every request to the strong provider."""
import anthropic
import openai
import pytest

from stack import CLIENT_KEY, Stack, key_of


@pytest.fixture
def dead_server_stack(tmp_path):
    s = Stack(tmp_path)
    s.kill_server()
    yield s
    s.close()


def test_requests_succeed_with_the_server_killed(dead_server_stack):
    s = dead_server_stack
    client = anthropic.Anthropic(base_url=s.anthropic_url, api_key=CLIENT_KEY, max_retries=0)
    for text in ("hi", "a long and complex question " * 20):
        raw = client.messages.with_raw_response.create(
            model="claude-sonnet-5", max_tokens=100, messages=[{"role": "user", "content": text}],
            # Even with nobody to strip it, a client-sent route header must not reach the draft.
            extra_headers={"x-cascade-route": "draft-anthropic"})
        assert raw.headers["x-cascade-path"] == "fallback"
        assert raw.parse().content[0].text.startswith("Simulated reply from claude-sonnet-5")
    oclient = openai.OpenAI(base_url=s.openai_url, api_key=CLIENT_KEY, max_retries=0)
    c = oclient.chat.completions.create(model="gpt-6.2-sol", messages=[{"role": "user", "content": "hi"}])
    assert c.choices[0].message.content
    assert len(s.sims["strong_anthropic"].received) == 2
    assert all(key_of(r.headers) == CLIENT_KEY for r in s.sims["strong_anthropic"].received)
    assert len(s.sims["strong_openai"].received) == 1
    assert s.sims["draft_anthropic"].received == [] and s.sims["draft_openai"].received == []


def test_server_restart_resumes_processing(dead_server_stack):
    s = dead_server_stack
    s.start_server()
    client = anthropic.Anthropic(base_url=s.anthropic_url, api_key=CLIENT_KEY, max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="claude-sonnet-5", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-cascade-path"] == "skipped"
