"""Check that our .proto subset is wire compatible with Envoy's official API.

Usage: python proto_conformance.py DESCRIPTOR_SET_FILE
Prints a JSON list of mismatches; exits 1 if there are any.

Every message, enum value, field and RPC we declare must exist in the
official descriptors (from the xds-protos package) with the same full name,
number, type, label, referenced type and oneof. Official fields we omit are
fine. Run this in its own process: xds-protos and our generated modules
register the same full names, so they cannot share a descriptor pool.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool

FDP = descriptor_pb2.FieldDescriptorProto


def _load_official(packages: set[str]) -> descriptor_pool.DescriptorPool:
    """Import every *_pb2 module of the xds-protos packages we mirror."""
    for package in sorted(packages):
        mod = importlib.import_module(package)
        for info in pkgutil.iter_modules(mod.__path__):
            if info.name.endswith("_pb2"):
                importlib.import_module(f"{package}.{info.name}")
    return descriptor_pool.Default()


def _oneof(msg: descriptor_pb2.DescriptorProto, field: FDP) -> str | None:
    # proto3 `optional` creates a synthetic oneof; that is covered by proto3_optional.
    if not field.HasField("oneof_index") or field.proto3_optional:
        return None
    return msg.oneof_decl[field.oneof_index].name


def _field_sig(msg: descriptor_pb2.DescriptorProto, f: FDP) -> dict:
    return {
        "number": f.number,
        "type": FDP.Type.Name(f.type),
        "label": FDP.Label.Name(f.label),
        "type_name": f.type_name.lstrip("."),
        "oneof": _oneof(msg, f),
        "proto3_optional": f.proto3_optional,
    }


def _as_proto(desc, proto_cls):
    out = proto_cls()
    desc.CopyToProto(out)
    return out


def _check_enum(ours: descriptor_pb2.EnumDescriptorProto, full: str, pool, errors: list[str]) -> None:
    try:
        official = _as_proto(pool.FindEnumTypeByName(full), descriptor_pb2.EnumDescriptorProto)
    except KeyError:
        errors.append(f"enum {full}: not in the official API")
        return
    numbers = {v.name: v.number for v in official.value}
    for v in ours.value:
        if v.name not in numbers:
            errors.append(f"enum value {full}.{v.name}: not in the official API")
        elif numbers[v.name] != v.number:
            errors.append(f"enum value {full}.{v.name}: number {v.number}, official {numbers[v.name]}")


def _check_message(ours: descriptor_pb2.DescriptorProto, full: str, pool, errors: list[str]) -> None:
    try:
        official = _as_proto(pool.FindMessageTypeByName(full), descriptor_pb2.DescriptorProto)
    except KeyError:
        errors.append(f"message {full}: not in the official API")
        return
    by_name = {f.name: f for f in official.field}
    by_number = {f.number: f for f in official.field}
    for f in ours.field:
        where = f"field {full}.{f.name}"
        if f.name not in by_name:
            clash = by_number.get(f.number)
            hint = f" (official number {f.number} is '{clash.name}')" if clash else ""
            errors.append(f"{where}: not in the official API{hint}")
            continue
        mine, theirs = _field_sig(ours, f), _field_sig(official, by_name[f.name])
        for key in mine:
            if mine[key] != theirs[key]:
                errors.append(f"{where}: {key} {mine[key]!r}, official {theirs[key]!r}")
    for e in ours.enum_type:
        _check_enum(e, f"{full}.{e.name}", pool, errors)
    for n in ours.nested_type:
        _check_message(n, f"{full}.{n.name}", pool, errors)


def _check_service(ours: descriptor_pb2.ServiceDescriptorProto, full: str, pool, errors: list[str]) -> None:
    try:
        official = _as_proto(pool.FindServiceByName(full), descriptor_pb2.ServiceDescriptorProto)
    except KeyError:
        errors.append(f"service {full}: not in the official API")
        return
    methods = {m.name: m for m in official.method}
    keys = ("input_type", "output_type", "client_streaming", "server_streaming")
    for m in ours.method:
        if m.name not in methods:
            errors.append(f"method {full}.{m.name}: not in the official API")
            continue
        for key in keys:
            mine, theirs = getattr(m, key), getattr(methods[m.name], key)
            if mine != theirs:
                errors.append(f"method {full}.{m.name}: {key} {mine!r}, official {theirs!r}")


def compare(fds: descriptor_pb2.FileDescriptorSet) -> list[str]:
    """Return human-readable mismatches between fds and the official API."""
    # Well-known types come from protobuf itself, not from our proto/ tree.
    files = [f for f in fds.file if not f.name.startswith("google/protobuf/")]
    pool = _load_official({f.package for f in files})
    errors: list[str] = []
    for f in files:
        for m in f.message_type:
            _check_message(m, f"{f.package}.{m.name}", pool, errors)
        for e in f.enum_type:
            _check_enum(e, f"{f.package}.{e.name}", pool, errors)
        for s in f.service:
            _check_service(s, f"{f.package}.{s.name}", pool, errors)
    return errors


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    fds = descriptor_pb2.FileDescriptorSet.FromString(Path(argv[1]).read_bytes())
    errors = compare(fds)
    print(json.dumps(errors, indent=2))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
