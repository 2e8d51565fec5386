//! The `smista` binary: `serve` runs the server (`smista_server::node`); `check-config`,
//! `client`, `ledger report`, `report intervals` and `dev-credentials` are its tools. Each
//! subcommand lives in `cmd/`; this file only parses the command line and dispatches.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// jemalloc rather than glibc's allocator: routing and the gRPC stack allocate small objects on
/// every request. Measured side by side on the reference machine (`benches/README.md`): about
/// 10% more RPCs per second in the offer phase, lower median latency, the same p99, 9% less
/// memory per waiting contact. mimalloc was faster still in throughput but its p99 at 5,000
/// offers/s was four times glibc's, so it was not taken.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// smista: contact-centre routing with a budget ceiling.
#[derive(Debug, Parser)]
#[command(name = "smista", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the gRPC server and the Prometheus endpoint.
    Serve(cmd::serve::ServeArgs),
    /// Validate a configuration file and print precise errors.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// Talk to a running server (for the quick tour and for operators' scripts).
    Client(cmd::client::ClientArgs),
    /// Read the budget ledger: `smista ledger report [--format table|csv|json]`.
    Ledger(cmd::ledger_report::LedgerArgs),
    /// Reports of a running server: `smista report intervals --from 2026-03-29 --to 2026-03-30
    /// --interval 30m [--format table|csv|json]`; `report operators` (operator accounting),
    /// `report operator-reads` (the privacy audit), `report budget BUDGET` (burn-down).
    Report(cmd::report_intervals::ReportArgs),
    /// Mint development credentials (CA, certificates, JWKS, tokens, API keys) and a secure demo
    /// configuration using them. Never for production.
    DevCredentials(cmd::dev_credentials::DevCredentialsArgs),
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Serve(args) => cmd::serve::run(args),
        Cmd::CheckConfig { file } => cmd::check_config::run(&file),
        Cmd::Client(args) => cmd::client::run(args),
        Cmd::Ledger(args) => cmd::ledger_report::run(args),
        Cmd::Report(args) => cmd::report_intervals::run(args),
        Cmd::DevCredentials(args) => cmd::dev_credentials::run(args),
    }
}
