//! Compiles the .proto files with protox (pure Rust), so a fresh machine needs no protoc:
//! flotilla's own contract (client and server), and the part of etcd's v3 API the hub's
//! etcd store speaks (client only; vendored under `proto/etcd/`, see its README).

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

    let etcd = "proto/etcd/api/etcdserverpb/rpc.proto";
    println!("cargo:rerun-if-changed=proto/etcd");
    let fds = protox::compile([etcd], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
