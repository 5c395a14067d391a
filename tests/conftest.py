"""Fixtures for every test folder."""
import os
from pathlib import Path

import pytest

# The sample data sets live beside the repository (../shared/data), not in it.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def sample_transcripts() -> Path:
    """The sample Claude Code transcripts. A test that needs them skips when they are absent
    (a user's checkout has no ../shared/data), except under CI=true, where it fails: CI must
    run it."""
    path = SHARED_DATA / "claude-code-transcripts"
    if not path.is_dir():
        reason = f"sample transcripts not found at {path}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI must run the tests on the sample data)")
        pytest.skip(reason)
    return path
