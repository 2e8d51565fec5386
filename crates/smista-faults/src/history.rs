//! The run's history: every operation a client made and its reply, every fault and node event,
//! in memory and as JSON lines.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, now.
#[must_use]
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What a history line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A gRPC call and its reply.
    #[default]
    Call,
    /// A fault injected (`rpc` names it, `node` the victim).
    Fault,
    /// The fault healed (process continued, restarted, proxy restored).
    Heal,
    /// A node started, exited or was signalled by the harness.
    Node,
}

/// One line of the history.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Op {
    /// What the line is.
    pub kind: Kind,
    /// Who made the call: `platform`, `desk:<operator>`, `reader`, `harness`.
    pub client: String,
    /// The node (index) the call went to, or the victim of a fault.
    pub node: usize,
    /// The RPC (`OfferContact`, `AcceptOffer`, ...), or the fault's or event's name.
    pub rpc: String,
    /// The contact concerned (empty if none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub contact: String,
    /// The operator concerned (empty if none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub operator: String,
    /// When the call was sent, Unix ms.
    pub start_ms: u64,
    /// When its reply (or time-out) came, Unix ms.
    pub end_ms: u64,
    /// `OK`, or the gRPC status code's name (`DEADLINE_EXCEEDED` for a client-side time-out).
    pub status: String,
    /// For an OK OfferContact: `assigned`, `queued` or `diverted`; otherwise free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub decision: String,
    /// Details: the operator assigned, the diversion reason, the status message, the epoch.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// An offer's `arrived_unix_ms`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub arrived_unix_ms: u64,
    /// A Login reply's `in_service`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_service: Vec<String>,
    /// The node's process was running and not stopped, when the call was sent and answered.
    #[serde(default)]
    pub alive: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Op {
    /// An OK reply.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.kind == Kind::Call && self.status == "OK"
    }

    /// A call of `rpc`.
    #[must_use]
    pub fn is(&self, rpc: &str) -> bool {
        self.kind == Kind::Call && self.rpc == rpc
    }
}

/// The history being recorded, shared by every client.
#[derive(Debug, Clone, Default)]
pub struct History(Arc<Mutex<Vec<Op>>>);

impl History {
    /// Appends `op`.
    pub fn record(&self, op: Op) {
        if let Ok(mut h) = self.0.lock() {
            h.push(op);
        }
    }

    /// A copy of everything recorded so far, in order of the replies.
    #[must_use]
    pub fn ops(&self) -> Vec<Op> {
        self.0.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// Writes the history as JSON lines to `path`.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        write_ops(&self.ops(), path)
    }
}

/// Writes `ops` as JSON lines to `path`.
///
/// # Errors
/// The file cannot be written.
pub fn write_ops(ops: &[Op], path: &std::path::Path) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for op in ops {
        serde_json::to_writer(&mut f, op)?;
        f.write_all(b"\n")?;
    }
    f.flush()
}

/// Reads a history written by [`write_ops`].
///
/// # Errors
/// The file cannot be read or a line is not an [`Op`].
pub fn read_ops(path: &std::path::Path) -> std::io::Result<Vec<Op>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(std::io::Error::other))
        .collect()
}

/// The name of a gRPC status code, as the proto documentation spells it.
#[must_use]
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "CANCELLED",
        C::Unknown => "UNKNOWN",
        C::InvalidArgument => "INVALID_ARGUMENT",
        C::DeadlineExceeded => "DEADLINE_EXCEEDED",
        C::NotFound => "NOT_FOUND",
        C::AlreadyExists => "ALREADY_EXISTS",
        C::PermissionDenied => "PERMISSION_DENIED",
        C::ResourceExhausted => "RESOURCE_EXHAUSTED",
        C::FailedPrecondition => "FAILED_PRECONDITION",
        C::Aborted => "ABORTED",
        C::OutOfRange => "OUT_OF_RANGE",
        C::Unimplemented => "UNIMPLEMENTED",
        C::Internal => "INTERNAL",
        C::Unavailable => "UNAVAILABLE",
        C::DataLoss => "DATA_LOSS",
        C::Unauthenticated => "UNAUTHENTICATED",
    }
}
