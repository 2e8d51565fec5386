//! What `smista-load` reads from the server beside its contacts: the snapshot checked before a
//! run (the scenario's queues and budget) and the process gauges of its metrics endpoint
//! (`--server-metrics`).

use smista_proto::v1 as pb;

use super::config::{LoadConfig, Scenario, MIX};
use super::connect::Pool;
use super::error::{rpc, LoadError};

/// The server's CPU seconds and resident bytes, from its Prometheus endpoint `url`
/// (`http://host:port/metrics`, plain HTTP).
pub(super) async fn server_usage(url: &str) -> Result<(f64, f64), LoadError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bad = |m: String| LoadError::Usage(format!("--server-metrics {url}: {m}"));
    let rest = url.strip_prefix("http://").ok_or_else(|| bad("not an http:// URL".into()))?;
    let (host, path) = rest.split_once('/').map_or((rest, "/metrics".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut s = tokio::net::TcpStream::connect(host).await.map_err(|e| bad(e.to_string()))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .map_err(|e| bad(e.to_string()))?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.map_err(|e| bad(e.to_string()))?;
    let value = |name: &str| {
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    match (value("smista_process_cpu_seconds"), value("smista_process_resident_memory_bytes")) {
        (Some(c), Some(r)) => Ok((c, r)),
        _ => Err(bad("no smista_process_* gauges (the server reads them from /proc: Linux only)".into())),
    }
}

/// Checks, through the server's snapshot, that it has what the scenario needs (its queues, a
/// budget for `budget`), so a run against the wrong configuration stops at once with the command
/// that starts the right one instead of failing on its first login.
pub(super) async fn preflight(cfg: &LoadConfig, pool: &Pool) -> Result<(), LoadError> {
    let needs: Vec<&str> = match cfg.scenario {
        Scenario::Floor | Scenario::Follow | Scenario::Citizen | Scenario::Wallboards => return Ok(()),
        Scenario::Mix => MIX.iter().map(|m| m.0).collect(),
        Scenario::Erlang | Scenario::Max | Scenario::Budget => vec![cfg.queue.as_str()],
    };
    let snap = pool.admin().get_snapshot(pb::GetSnapshotRequest {}).await.map_err(rpc("snapshot"))?.into_inner();
    let have: Vec<&str> = snap.queues.iter().map(|q| q.name.as_str()).collect();
    let wrong = |what: String| {
        LoadError::Usage(format!(
            "{what}: the {:?} scenario needs a server started with `{}`",
            cfg.scenario,
            cfg.scenario.server_command()
        ))
    };
    if let Some(q) = needs.iter().find(|q| !have.contains(q)) {
        return Err(wrong(format!("the server at {} has no queue `{q}` (it has {})", cfg.target, have.join(", "))));
    }
    if cfg.scenario == Scenario::Budget && snap.budgets.is_empty() {
        return Err(wrong(format!("the server at {} has no budget", cfg.target)));
    }
    Ok(())
}
