"""Protobuf/gRPC modules for Envoy's ext_proc v3 API (a wire-compatible subset).

Generated from proto/ by proto/generate.py (`make proto`); do not edit the
*_pb2*.py(i) files by hand.
"""
