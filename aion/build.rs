//! With the `grpc` feature: the gRPC service from `proto/aion/v1/aion.proto`,
//! compiled by protox (pure Rust, no protoc) and tonic-prost-build.

fn main() {
    println!("cargo:rerun-if-changed=proto/aion/v1/aion.proto");
    #[cfg(feature = "grpc")]
    {
        let fds = match protox::compile(["aion/v1/aion.proto"], ["proto"]) {
            Ok(f) => f,
            Err(e) => panic!("proto/aion/v1/aion.proto: {e}"),
        };
        if let Err(e) = tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds) {
            panic!("generating the gRPC service: {e}");
        }
    }
}
