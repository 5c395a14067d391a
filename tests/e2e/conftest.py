import pytest

from stack import CLIENT_KEY, DRAFT_KEY, Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("stack"))
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _fresh_providers_and_no_leaks(request):
    """Each test inspects only what its own requests did at the fake providers. After every test
    on a shared stack, whatever path it took: the client's key never reached a draft provider,
    no provider saw the sidecar's internal headers, and neither key reached the server's logs."""
    if "stack" not in request.fixturenames:
        yield
        return
    s = request.getfixturevalue("stack")
    s.clear()
    yield
    for name, sim in s.sims.items():
        if name.startswith("draft"):
            for r in sim.received:
                assert CLIENT_KEY not in str(r.headers) and CLIENT_KEY.encode() not in r.body, name
        for r in sim.received:  # routing headers stay inside the pod
            assert not any(h.startswith("x-cascade-") for h in r.headers), (name, r.headers)
    logs = s.server_log.read_text()
    assert CLIENT_KEY not in logs and DRAFT_KEY not in logs
