"""What a draft provider may receive: the allow-list every draft request of every e2e test is
checked against (conftest.py)."""
from types import SimpleNamespace

import aiohttp.client_reqrep
import aiohttp.http

from cascade_extproc.extproc.credentials import draft_auth
from cascade_extproc.types import Api
from stack import CLIENT_KEY, DRAFT_KEY


def draft_header_rules(draft_api: str) -> dict[str, object]:
    """Every header a draft provider may receive, and what it must hold (a value, or a test).

    Derived from the code that makes the draft calls, the relay's and the cascade's alike (both go
    through providers.HttpProvider on the server's aiohttp session): the sidecar's credentials
    from extproc.credentials.draft_auth (the key header must carry exactly the draft key;
    anthropic-version is the client's, or the default), content-type from HttpProvider, and what
    aiohttp's client adds to every request (host, content-length, its default accept and
    accept-encoding, its user-agent). Nothing else of the client's."""
    auth = draft_auth(SimpleNamespace(headers={}), Api(draft_api), DRAFT_KEY)
    rules: dict[str, object] = {
        name: value if DRAFT_KEY in value else (lambda v: isinstance(v, str) and v != "")
        for name, value in auth.items()}
    assert sum(DRAFT_KEY in v for v in auth.values()) == 1  # one header carries the key
    rules["content-type"] = "application/json"
    rules.update({k.lower(): v for k, v in aiohttp.client_reqrep.ClientRequest.DEFAULT_HEADERS.items()})
    rules["user-agent"] = aiohttp.http.SERVER_SOFTWARE
    rules["host"] = lambda v: v.startswith("127.0.0.1:")
    rules["content-length"] = lambda v: v.isdigit()
    return rules


def check_draft_request(name: str, sim, r) -> None:
    rules = draft_header_rules(sim.api)
    extra = set(r.headers) - set(rules)
    assert not extra, f"{name} received headers outside the allow-list: {sorted(extra)}"
    for header, rule in rules.items():
        value = r.headers.get(header)
        assert value is not None, f"{name}: no {header}"
        assert rule(value) if callable(rule) else value == rule, (name, header, value)
    assert int(r.headers["content-length"]) == len(r.body)
    assert CLIENT_KEY.encode() not in r.body, name
