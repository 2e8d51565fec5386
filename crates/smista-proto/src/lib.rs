//! Generated code of the `smista.v1` gRPC schema (see `proto/smista/v1/`).
//!
//! This crate holds generated code only: the messages, the client stubs and the server traits, plus
//! [`FILE_DESCRIPTOR_SET`] for gRPC server reflection. It is the only crate that knows the wire
//! format; `smista-core` never sees these types.

#![allow(missing_docs, unreachable_pub, clippy::all)]

/// The `smista.v1` package.
pub mod v1 {
    tonic::include_proto!("smista.v1");
}

/// The encoded `FileDescriptorSet` of `smista.v1`, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("smista_v1_descriptor");
