//! Compiles the .proto files with protox (pure Rust), so a fresh machine needs no protoc.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/flotilla/v1/flotilla.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // Written for gRPC reflection, so grpcurl can list and call the services.
    std::fs::write(out.join("flotilla_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .bytes(".flotilla.v1.Assign.content")
        .bytes(".flotilla.v1.ContentChunk.data")
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
