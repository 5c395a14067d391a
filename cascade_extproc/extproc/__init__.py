"""The Envoy ext_proc side: the only package that imports grpc and the generated code."""
