//! `smista-faults`: runs the fault harness (see the crate's README).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use smista_faults::checker::Verdict;
use smista_faults::run::{run, Fault, RunConfig};

/// A Jepsen-style fault harness for smista: real nodes, faults, a checker.
#[derive(Debug, Parser)]
#[command(name = "smista-faults")]
struct Cli {
    /// The fault injected in each run.
    #[arg(long, value_enum)]
    fault: Fault,
    /// Runs (a table row each).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Seconds of offers per run.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Contacts offered per second (over all nodes).
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Operator desks (over all nodes): half a supplier group the budget pays, half internal staff.
    #[arg(long, default_value_t = 24)]
    desks: usize,
    /// Nodes (the `restart` fault always uses one).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Per-call deadline of state changes, ms.
    #[arg(long, default_value_t = 800)]
    deadline_ms: u64,
    /// The `smista` binary (default: target/release/smista, then target/debug/smista).
    #[arg(long)]
    smista: Option<PathBuf>,
    /// PostgreSQL.
    #[arg(long, env = "SMISTA_TEST_PG_URL")]
    pg_url: String,
    /// Write the history as JSON lines here (`{run}` is replaced by the run number).
    #[arg(long)]
    history: Option<String>,
    /// Keep the schema and the nodes' directories.
    #[arg(long)]
    keep: bool,
    /// Where the nodes' directories and logs go.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("smista-faults"))]
    work_dir: PathBuf,
    /// Print progress.
    #[arg(long, short)]
    verbose: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(smista) = smista_faults::find_smista(cli.smista.as_deref()) else {
        eprintln!("no smista binary: build it (cargo build --release --bin smista) or pass --smista PATH");
        return ExitCode::from(2);
    };
    let mut rows = Vec::new();
    let mut failover = Vec::new();
    let mut bad = false;
    for r in 1..=cli.runs {
        let history = cli.history.as_ref().map(|h| {
            PathBuf::from(if cli.runs > 1 && !h.contains("{run}") {
                format!("{h}.{r}")
            } else {
                h.replace("{run}", &r.to_string())
            })
        });
        let cfg = RunConfig {
            smista: smista.clone(),
            pg_url: cli.pg_url.clone(),
            fault: cli.fault,
            nodes: cli.nodes,
            duration: Duration::from_secs(cli.duration),
            rate: cli.rate,
            desks: cli.desks,
            deadline: Duration::from_millis(cli.deadline_ms),
            run: r,
            keep: cli.keep,
            work_dir: cli.work_dir.clone(),
            history,
            verbose: cli.verbose,
        };
        match run(&cfg).await {
            Ok(rep) => {
                let v = &rep.verdict;
                println!("{}", v.line(cli.fault.name(), r));
                for n in &v.notes {
                    println!("  note: {n}");
                }
                if !v.ok() {
                    bad = true;
                    println!("  schema {} logs {:?}", rep.schema, rep.logs);
                }
                rows.push(v.row(cli.fault.name(), r));
                failover.extend(v.failover_ms);
            }
            Err(e) => {
                bad = true;
                println!("{} run {r}: HARNESS ERROR {e}", cli.fault.name());
            }
        }
    }
    println!("\n{}", Verdict::header());
    for r in &rows {
        println!("{r}");
    }
    println!(
        "\nmax failover for {}: {} ms over {} runs",
        cli.fault.name(),
        failover.iter().max().map_or("-".to_owned(), u64::to_string),
        failover.len()
    );
    if bad {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
