//! flotilla's wire contract: generated gRPC types and services.
//!
//! **Architecture Invariant:** these types stop at the gRPC edge. The hub and spoke convert
//! them into `flotilla-model` types on receipt, so nothing deeper handles raw wire fields.
#![forbid(unsafe_code)]

#[allow(clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod v1 {
    tonic::include_proto!("flotilla.v1");

    /// Encoded `FileDescriptorSet`, served through gRPC reflection so `grpcurl` works.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("flotilla_descriptor");
}
