// The floor: an ext_proc server in C++ (grpc++) that does nothing but continue. Built from
// Debian's packages by bench/floor/build.sh, from the project's own proto/ subset. bench/floor.py
// runs it behind the same Envoy filters as cascade-extproc: (its latency - Envoy alone) is what
// any ext_proc server pays before doing any work. It behaves on the wire as cascade-extproc does
// on the direct path: it answers the request body with CONTINUE and the metadata our Envoy
// filters read (cascade.path, so the fail-open filter takes its decided path), then ends the
// stream (one message per call).
//
//   bench/floor/null_extproc ADDRESS      (unix:/path or 127.0.0.1:port)
#include <grpcpp/grpcpp.h>

#include <iostream>
#include <memory>
#include <string>

#include "cascade_extproc/_proto/external_processor.grpc.pb.h"

namespace ep = envoy::service::ext_proc::v3;

class Continue final : public ep::ExternalProcessor::Service {
  grpc::Status Process(grpc::ServerContext*,
                       grpc::ServerReaderWriter<ep::ProcessingResponse, ep::ProcessingRequest>* stream) override {
    ep::ProcessingRequest req;
    while (stream->Read(&req)) {
      ep::ProcessingResponse resp;
      switch (req.request_case()) {
        case ep::ProcessingRequest::kRequestHeaders: resp.mutable_request_headers(); break;
        case ep::ProcessingRequest::kResponseHeaders: resp.mutable_response_headers(); break;
        case ep::ProcessingRequest::kRequestBody: resp.mutable_request_body(); break;
        case ep::ProcessingRequest::kResponseBody: resp.mutable_response_body(); break;
        case ep::ProcessingRequest::kRequestTrailers: resp.mutable_request_trailers(); break;
        case ep::ProcessingRequest::kResponseTrailers: resp.mutable_response_trailers(); break;
        default: resp.mutable_request_body(); break;
      }
      const bool body = req.request_case() == ep::ProcessingRequest::kRequestBody;
      if (body) {
        google::protobuf::Value path;
        path.set_string_value("direct");
        google::protobuf::Value ns;
        (*ns.mutable_struct_value()->mutable_fields())["path"] = path;
        (*resp.mutable_dynamic_metadata()->mutable_fields())["cascade"] = ns;
      }
      if (!stream->Write(resp)) break;
      if (body) break;  // nothing more to see: end the stream, as cascade-extproc does
    }
    return grpc::Status::OK;
  }
};

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: null_extproc ADDRESS\n";
    return 2;
  }
  Continue service;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(argv[1], grpc::InsecureServerCredentials());
  builder.SetMaxReceiveMessageSize(64 << 20);
  builder.SetMaxSendMessageSize(64 << 20);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server(builder.BuildAndStart());
  if (!server) return 1;
  server->Wait();
  return 0;
}
