"""The committed ext_proc protobuf code: reproducible and wire compatible with Envoy."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
PROTO_DIR = REPO / "proto"
GENERATED_DIR = REPO / "cascade_extproc" / "_proto"
CONFORMANCE = HERE / "proto_conformance.py"


def _load_generator():
    # proto/ is not a package; load the script by path.
    spec = importlib.util.spec_from_file_location("_cascade_proto_generate", PROTO_DIR / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generator = _load_generator()


def conformance_errors(proto_dir: Path, tmp_path: Path) -> list[str]:
    """Compile proto_dir and compare it with the official API in a fresh process.

    A subprocess because xds-protos defines the same full names as our
    generated modules, and a descriptor pool can only hold one of them.
    """
    fds = generator.descriptor_set(tmp_path / "subset.pb", proto_dir)
    result = subprocess.run(
        [sys.executable, str(CONFORMANCE), str(fds)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


def mutated_proto_dir(tmp_path: Path, pattern: str, replacement: str) -> Path:
    """Copy proto/ and apply one regex edit to external_processor.proto."""
    copy = tmp_path / "proto"
    shutil.copytree(PROTO_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    path = copy / "cascade_extproc" / "_proto" / "external_processor.proto"
    text, count = re.subn(pattern, replacement, path.read_text())
    assert count == 1, f"mutation pattern {pattern!r} did not match exactly once"
    path.write_text(text)
    return copy


# Inside `message HttpBody { ... }` only; StreamedBodyResponse has the same field names.
HTTP_BODY = r"(message HttpBody \{[^}]*?)"


def test_generated_code_is_up_to_date(tmp_path):
    fresh = {p.name: p.read_bytes() for p in generator.generate(tmp_path)}
    committed = {p.name: p.read_bytes() for p in GENERATED_DIR.glob("*_pb2*.py*")}
    assert fresh, "generator produced no files"
    assert sorted(fresh) == sorted(committed), "run `make proto` and commit the result"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated files {stale}: run `make proto`"


def test_subset_matches_official_envoy_api(tmp_path):
    errors = conformance_errors(PROTO_DIR, tmp_path)
    assert not errors, "proto/ differs from Envoy's ext_proc API:\n" + "\n".join(errors)


def test_conformance_reports_changed_field_number(tmp_path):
    proto = mutated_proto_dir(tmp_path, HTTP_BODY + r"bool end_of_stream = 2;", r"\1bool end_of_stream = 7;")
    errors = conformance_errors(proto, tmp_path)
    assert errors == ["field envoy.service.ext_proc.v3.HttpBody.end_of_stream: number 7, official 2"]


def test_conformance_reports_renamed_field(tmp_path):
    proto = mutated_proto_dir(
        tmp_path, HTTP_BODY + r"bool end_of_stream_without_message = 3;", r"\1bool eos_without_message = 3;"
    )
    errors = conformance_errors(proto, tmp_path)
    assert len(errors) == 1
    assert "HttpBody.eos_without_message: not in the official API" in errors[0]
