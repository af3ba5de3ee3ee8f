//! flotilla's wire contract: generated gRPC types and services.
//!
//! **Architecture Invariant:** these types stop at the gRPC edge. The hub and spoke convert
//! them into `flotilla-model` types on receipt, so nothing deeper handles raw wire fields.
//! The conversions that both ends share live here, in `convert`, once.
#![forbid(unsafe_code)]

pub mod convert;

#[allow(clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod v1 {
    tonic::include_proto!("flotilla.v1");

    /// Encoded `FileDescriptorSet`, served through gRPC reflection so `grpcurl` works.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("flotilla_descriptor");
}

/// etcd's v3 API (KV, Watch, Lease; clients only), generated from the protos vendored
/// under `proto/etcd/` (etcd v3.7.2). The hub's etcd store is its only user.
#[allow(clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod etcd {
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

/// Sizes both ends of `Spoke.Sync` agree on (`docs/protocol.md`, "Large contents").
pub mod limits {
    /// The ceiling: the largest bundle content a hub sends and a spoke accepts,
    /// reassembled from its chunks.
    pub const MAX_CONTENT_BYTES: u64 = 64 << 20;
    /// Content up to this size rides inside its `Assign`, as it always did, so spokes
    /// from before `ContentChunk` keep receiving every bundle they could before (they
    /// accepted 20 MiB messages).
    pub const MAX_INLINE_CONTENT_BYTES: usize = 16 << 20;
    /// Larger content goes in `ContentChunk` messages of this size.
    pub const CONTENT_CHUNK_BYTES: usize = 4 << 20;
}
