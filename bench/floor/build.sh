#!/bin/sh
# Builds bench/floor/null_extproc, the C++ do-nothing ext_proc server (the floor column of
# bench/floor.py), from Debian's packages and the project's proto/ subset:
#   apt-get install -y g++ pkg-config libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev
#   sh bench/floor/build.sh
# Not run in CI: the benchmark builds it when the packages are there and reports the column
# missing otherwise.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$here/build"
mkdir -p "$out"
protos=$(cd "$root/proto" && ls cascade_extproc/_proto/*.proto)
(cd "$root/proto" && protoc -I . -I /usr/include --cpp_out="$out" $protos)
(cd "$root/proto" && protoc -I . -I /usr/include --grpc_out="$out" \
    --plugin=protoc-gen-grpc="$(command -v grpc_cpp_plugin)" cascade_extproc/_proto/external_processor.proto)
g++ -O2 -std=c++17 -I "$out" -o "$here/null_extproc" "$here/null_extproc.cc" "$out"/cascade_extproc/_proto/*.cc \
    $(pkg-config --cflags --libs grpc++ protobuf) -lpthread
echo "$here/null_extproc"
