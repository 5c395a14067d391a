"""Generate cascade_extproc/_proto/*_pb2*.py(i) from the .proto files in proto/.

Usage: python proto/generate.py [OUT_DIR]   (default: the repository root)

The generated code is committed; tests/unit/_proto/test_proto.py checks it is
byte-identical to a fresh run, so always regenerate after editing proto/.
"""

from __future__ import annotations

import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

PROTO_DIR = Path(__file__).resolve().parent
REPO_ROOT = PROTO_DIR.parent
# grpc_tools ships google/protobuf/*.proto (duration, struct, ...).
WELL_KNOWN_DIR = Path(grpc_tools.__file__).resolve().parent / "_proto"


def proto_files(proto_dir: Path = PROTO_DIR) -> list[Path]:
    return sorted(proto_dir.rglob("*.proto"))


def run_protoc(args: list[str], proto_dir: Path = PROTO_DIR) -> None:
    """Run the bundled protoc with our include path; raise on failure."""
    argv = ["protoc", f"-I{proto_dir}", f"-I{WELL_KNOWN_DIR}", *args]
    argv += [str(p) for p in proto_files(proto_dir)]
    if protoc.main(argv) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(argv)}")


def generate(out_dir: Path = REPO_ROOT, proto_dir: Path = PROTO_DIR) -> list[Path]:
    """Write the Python modules under out_dir; return the generated files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    o = str(out_dir)
    run_protoc([f"--python_out={o}", f"--pyi_out={o}", f"--grpc_python_out={o}"], proto_dir)
    return sorted(out_dir.glob("cascade_extproc/_proto/*_pb2*.py*"))


def descriptor_set(out_file: Path, proto_dir: Path = PROTO_DIR) -> Path:
    """Compile proto_dir to a FileDescriptorSet (with imports) for conformance checks."""
    run_protoc([f"--descriptor_set_out={out_file}", "--include_imports"], proto_dir)
    return Path(out_file)


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT):
        print(path)
