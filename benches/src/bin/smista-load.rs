//! `smista-load`: load tests against a running smista. See `benches/README.md`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;
use smista_benches::load::{run_many, LoadConfig, Report};

/// Drives running smista nodes like a telephony platform and an operator floor, and reports what
/// it measured: open-loop scenarios compared with Erlang C, budget runs, the transport floor,
/// wallboards, and the cost of the trust boundary. See benches/README.md.
///
/// Each scenario needs the server started with its configuration: `erlang`, `max`, `budget` and
/// `floor` with `smista serve --config benches/scenarios/loadtest.toml`, `citizen` with
/// `benches/scenarios/citizen.toml`, `mix` with the embedded demo (`smista serve`). The run
/// checks the server's queues first and says which configuration it needs.
#[derive(Debug, Parser)]
#[command(name = "smista-load", version)]
struct Cli {
    #[command(flatten)]
    load: LoadConfig,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let report = rt.block_on(async {
        let s = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("stopping: reporting what was measured so far");
                s.store(true, Ordering::Relaxed);
            }
        });
        run_many(&cli.load, stop.clone()).await
    });
    let reports = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (target, report) in &reports {
        if reports.len() > 1 {
            println!("== {target}");
        }
        print_table(report);
    }
    if reports.len() > 1 {
        println!("== spend per node");
        println!(
            "{:<22} {:<10} {:<12} {:>12} {:>12} {:>12}",
            "target", "node", "budget", "settled", "reserved", "lease"
        );
        for (target, report) in &reports {
            for b in &report.budgets {
                println!(
                    "{:<22} {:<10} {:<12} {:>12} {:>12} {:>12}",
                    target.trim_start_matches("http://").trim_start_matches("https://"),
                    b.node_id,
                    b.budget,
                    b.settled_cents,
                    b.reserved_cents,
                    b.lease_cents
                );
            }
        }
    }
    if let Some(path) = &cli.json {
        let json = if reports.len() == 1 {
            serde_json::to_string_pretty(&reports[0].1)
        } else {
            serde_json::to_string_pretty(
                &reports.iter().map(|(t, r)| serde_json::json!({"target": t, "report": r})).collect::<Vec<_>>(),
            )
        };
        let text = match json {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: cannot encode the report: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn print_table(r: &Report) {
    println!("scenario             {}", r.scenario);
    if r.latency_us.count > 0 {
        println!(
            "offers/s             {:.1} (target {:.1}) over {:.1} s",
            r.offers_per_second, r.target_rate, r.elapsed_seconds
        );
        let l = &r.latency_us;
        println!("offer latency (us)   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}", l.p50, l.p90, l.p99, l.p999, l.max);
        println!("outcomes             {:?}", r.outcomes);
        if !r.divert_reasons.is_empty() {
            println!("diversions           {:?}", r.divert_reasons);
        }
        if r.follow.is_none() {
            println!(
                "P(wait) {:.3}  ASA {:.2} s  service level {:.3}  abandon {:.3}  occupancy {:.3}",
                r.p_wait, r.asa_seconds, r.service_level, r.abandon_rate, r.occupancy
            );
        }
        if let Some(t) = &r.theory {
            println!(
                "Erlang C             P(wait) {:.3}  ASA {:.2} s  service level {:.3}  occupancy {:.3} (load {:.2} E)",
                t.p_wait, t.asa_seconds, t.service_level, t.occupancy, t.load_erlangs
            );
        }
        if let Some(s) = &r.second_level {
            println!(
                "second level         {} transfers to {} ({:.2}/s), {} answered: P(wait) {:.3}  ASA {:.2} s  service level {:.3}  occupancy {:.3} ({} operators, handle {:.2} s)",
                s.transfers, s.queue, s.transfers_per_second, s.answered, s.p_wait, s.asa_seconds, s.service_level, s.occupancy, s.operators, s.mean_handle_seconds
            );
            if let Some(t) = &s.theory {
                println!(
                    "Erlang C (second)    P(wait) {:.3}  ASA {:.2} s  service level {:.3}  occupancy {:.3} (load {:.2} E)",
                    t.p_wait, t.asa_seconds, t.service_level, t.occupancy, t.load_erlangs
                );
            }
        }
        for w in &r.warnings {
            println!("warning              {w}");
        }
        for w in &r.wait_estimates {
            println!(
                "wait estimate {:<14} {} answered after queuing ({} without an estimate): median |error| {:.2} s, within ±50% {:.3}, mean estimate {:.2} s vs wait {:.2} s",
                w.queue, w.estimated, w.without_estimate, w.median_abs_error_s, w.within_half, w.mean_estimate_s, w.mean_wait_s
            );
        }
        let c = &r.consistency;
        println!(
            "every contact ended  {} of {} exactly once ({} missing, {} twice)",
            c.finished_once, c.contacts, c.missing, c.duplicated
        );
        for b in &r.budgets {
            println!(
                "budget {:<12} ceiling {} settled {} reserved {} overrun {} paced {} extra-budget diversions {}",
                b.budget,
                b.ceiling_cents,
                b.settled_cents,
                b.reserved_cents,
                b.overrun_cents,
                b.paced_allowance_cents,
                b.extra_budget_diversions
            );
        }
    }
    if let (Some(cpu), Some(rss)) = (r.server_cpu_us_per_contact, r.server_rss_bytes) {
        let start = r.server_rss_start_bytes.unwrap_or(rss);
        let desks = r.usage_at_arrivals.map_or(0.0, |u| u.1) - start;
        println!(
            "server               {cpu:.0} µs of CPU per contact; resident {:.1} MiB at the end, of which {:.1} MiB for the desks' logins and streams",
            rss / 1_048_576.0,
            desks / 1_048_576.0
        );
    }
    if let Some(d) = r.server_rss_per_desk_bytes {
        println!("memory per desk      {:.1} KiB (logged in, WatchOffers open)", d / 1024.0);
    }
    if let Some(w) = &r.wallboards {
        println!(
            "wallboards           {} ({} filtered to {}, {} ms batches): {} events read, {} ended early; {} scrapes, {} failed{}",
            w.subscribers,
            w.filtered,
            w.queue,
            w.max_delay_ms,
            w.events_received,
            w.streams_ended_early,
            w.scrapes,
            w.scrape_failures,
            w.rss_per_subscriber_bytes.map_or(String::new(), |b| format!("; {:.1} KiB per subscriber", b / 1024.0))
        );
    }
    if let (Some(n), Some(w), Some(x)) = (r.no_wallboard_offer_rps, r.wallboard_offer_rps, r.wallboard_ratio) {
        println!("offers/s no wallboard {n:.0}  with the wallboards and scraper {w:.0}  ratio {x:.3}");
    }
    if r.desks_offered > 0 {
        println!("desks offered        {} of the run's desks", r.desks_offered);
    }
    if let Some(c) = &r.citizen {
        println!(
            "calls                {} offered, {} answered live, {} abandoned",
            c.calls, c.answered_live, c.abandoned
        );
        println!(
            "callbacks            {} requested instead of hanging up ({:.0}% of callers out of patience), {} completed, {} unanswered attempts, {} unreachable",
            c.callbacks_requested,
            100.0 * c.abandon_avoided_share,
            c.callbacks_completed,
            c.callback_attempts_unanswered,
            c.callbacks_unreachable
        );
        println!(
            "appointments         {} booked, {} offered on time to their operator, {} early, slowest {} ms after its slot",
            c.appointments_booked, c.appointments_on_time, c.appointments_early, c.appointment_max_delay_ms
        );
        println!("open at the end      {}", c.open_at_end);
    }
    if let Some(f) = &r.follow {
        println!("group                {}", f.targets.join(", "));
        println!(
            "contacts             {} offered, {} completed, {} diverted, {} still open",
            f.contacts, f.completed, f.diverted, f.open
        );
        println!(
            "following            {} errors surfaced, {} accepted twice, {} order inversions, {} resyncs",
            f.surfaced_errors, f.accepted_twice, f.order_inversions, f.resyncs
        );
        for s in &f.switches {
            let accept = s
                .first_accept_unix_ms
                .map_or("none".to_owned(), |t| format!("{} ms", t.saturating_sub(s.last_offer_before_unix_ms)));
            println!(
                "switch               node {} -> node {}: first offer {} ms, first acceptance {accept} after the last offer on node {}; {} offered again",
                s.from,
                s.to,
                s.first_offer_unix_ms.saturating_sub(s.last_offer_before_unix_ms),
                s.from,
                s.offered_again
            );
        }
    }
    if let Some(c) = &r.report_check {
        println!(
            "interval report      {} this run's counts ({} ms .. {} ms)",
            if c.agrees { "AGREES with" } else { "DIFFERS from" },
            c.from_unix_ms,
            c.to_unix_ms
        );
        for (m, q) in c.mine.iter().zip(c.report.iter()) {
            println!(
                "  {:<18} run: offered {} answered {} abandoned {} diverted {} live {} | report: offered {} answered {} abandoned {} diverted {} live {}",
                m.queue, m.offered, m.answered, m.abandoned, m.diverted, m.in_progress,
                q.offered, q.answered, q.abandoned, q.diverted, q.in_progress
            );
        }
    }
    if let Some(c) = &r.operator_check {
        println!(
            "operator report      {} this run's desk times ({} ms outside the run's bounds, tolerance {} ms; largest difference from the run's estimate {} ms; {} pauses)",
            if c.agrees { "AGREES with" } else { "DIFFERS from" },
            c.outside_ms,
            c.tolerance_ms,
            c.max_difference_ms,
            c.pauses
        );
        for (m, g) in c.mine.iter().zip(c.report.iter()) {
            let paused = |p: &std::collections::BTreeMap<String, i64>| {
                p.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
            };
            println!(
                "  {:<12} run: logged in {} available {} on contacts {} paused [{}] | report: logged in {} available {} on contacts {} paused [{}]",
                m.group, m.logged_in_ms, m.available_ms, m.on_contact_ms, paused(&m.paused_ms),
                g.logged_in_ms, g.available_ms, g.on_contact_ms, paused(&g.paused_ms)
            );
        }
    }
    if let Some(m) = r.max_rate {
        println!("max rate within p99 bound  {m:.0}/s");
    }
    if let Some(f) = r.floor_rps {
        println!("floor (empty RPC)/s  {f:.0}");
    }
    if let (Some(o), Some(x)) = (r.offer_rps, r.ratio_to_floor) {
        println!("offers/s closed loop {o:.0}  ratio to floor {x:.3}");
    }
    if let (Some(o), Some(x)) = (r.offer_phase_rpc_rps, r.rpc_ratio_to_floor) {
        println!("all RPCs/s in the offer phase {o:.0}  ratio to floor {x:.3}");
    }
    if let (Some(n), Some(i), Some(x)) =
        (r.no_subscriber_offer_rps, r.idle_subscriber_offer_rps, r.idle_subscriber_ratio)
    {
        println!("offers/s no subscriber {n:.0}  with idle filtered subscribers {i:.0}  ratio {x:.3}");
    }
    if let (Some(s), Some(p), Some(x)) = (r.target_offer_rps, r.other_offer_rps, r.other_ratio) {
        println!("offers/s target {s:.0}  other {p:.0}  ratio {x:.3}");
    }
    if let (Some(s), Some(p), Some(x)) = (r.secure_offer_rps, r.plain_offer_rps, r.secure_ratio) {
        println!("offers/s TLS + tokens {s:.0}  plaintext {p:.0}  ratio {x:.3}");
    }
}
