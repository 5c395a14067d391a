import pytest

import stack as stack_mod
from leaks import check_draft_request
from stack import CLIENT_KEY, DRAFT_KEY, stack_fixture


stack = stack_fixture("stack")  # the stack most modules share


@pytest.fixture(autouse=True)
def _fresh_providers_and_no_leaks(request):
    """Each test inspects only what its own requests did at the fake providers of the shared
    stack. After every test, on every stack any test has built: every header of every model call a
    draft provider received is on the allow-list (leaks.py: the sidecar's key, exactly; nothing of the client's),
    no provider saw the sidecar's internal headers, and neither key reached the server's logs."""
    if "stack" in request.fixturenames:
        request.getfixturevalue("stack").clear()
    yield
    for s in stack_mod.STACKS:
        for name, sim in s.sims.items():
            new = [r for r in sim.received if not getattr(r, "leak_checked", False)]
            for r in new:  # each request is checked once: one leak fails one test, not every later one
                r.leak_checked = True
            for r in new:
                # The sidecar calls a draft provider only on its model path; anything else there came
                # from a test itself (test_e2e_pod_isolation's hostile app probes every port).
                if name.startswith("draft") and r.path.endswith(("/v1/messages", "/chat/completions")):
                    check_draft_request(name, sim, r)
                # routing headers stay inside the pod
                assert not any(h.startswith("x-cascade-") for h in r.headers), (name, r.headers)
        logs = s.server_log.read_text()
        assert CLIENT_KEY not in logs and DRAFT_KEY not in logs
