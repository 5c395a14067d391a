import pytest

from stack import Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("stack"))
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _fresh_providers(request):
    # Each test inspects only what its own requests did at the fake providers.
    if "stack" in request.fixturenames:
        request.getfixturevalue("stack").clear()
