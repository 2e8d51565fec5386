//! Why a run could not be made ([`LoadError`]), and the mapping of a failed setup RPC to it.

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not reachable.
    #[error("cannot reach smista at {target}: {}", smista_client::connect::causes(source))]
    Unreachable {
        /// Target.
        target: String,
        /// Cause.
        source: tonic::transport::Error,
    },
    /// A setup RPC failed.
    #[error("{what}: {status}")]
    Rpc {
        /// What was being done.
        what: String,
        /// The status.
        status: tonic::Status,
    },
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
}

pub(super) fn rpc(what: impl Into<String>) -> impl FnOnce(tonic::Status) -> LoadError {
    let what = what.into();
    move |status| LoadError::Rpc { what, status }
}
