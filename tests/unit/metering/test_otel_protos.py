"""The test venv holds two copies of opentelemetry/proto: xds-protos' (older, for the proto
conformance tests) and opentelemetry-proto's, which the OTLP exporters import. Whichever was
installed last wins; the Makefile reinstalls opentelemetry-proto last. A fresh venv that got this
wrong failed only where the exporter is imported."""


def test_the_otlp_exporters_get_their_own_protos():
    from opentelemetry.proto.common.v1 import common_pb2

    assert hasattr(common_pb2, "InstrumentationScope")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: F401
