//! Two threads against one, measured in alternating rounds in one run, for the routing core
//! (`offers`, `assign_cycle`, `queue_cycle`: 3,300 operators, 40 queues) and the server's request
//! path (handlers without network). Each round of each side does the same work; the ratio is the
//! median over rounds of the two-thread rate to the one-thread rate just before it, so the
//! machine's drift (tens of percent within minutes here) falls on both sides alike.
//!
//! Run: `cargo run --release -p smista-server --example scaling [-- --rounds 7 --threads 2
//! --only request_path]`.
//! Each pair of rounds is bracketed by a control, threads that share nothing ([`spin`]): its
//! ratio is what the machine gave the threads at that moment (on this VM the second core is
//! sometimes lent elsewhere for minutes, and every two-thread figure halves with it).
//! The ratio printed is the median over the rounds whose control found the cores there (at least
//! 0.9 of the thread count; "counted"). Prints a table (each round's ratio / control too) and,
//! last, one JSON line (the report).
//!
//! [`spin`]: smista_benches::scaling::spin

use std::sync::Arc;

use smista_benches::scaling::{compare, engine, run_cycles, run_offers, Comparison, Lane};

#[path = "../benches/common/request_path.rs"]
mod request_path;

use request_path::{request_state, run_requests};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let rounds = arg("--rounds", 7);
    let threads = arg("--threads", 2).max(2);
    let args: Vec<String> = std::env::args().collect();
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned().unwrap_or_default();
    let wanted = |name: &str| name.contains(only.as_str());
    let mut results: Vec<Comparison> = Vec::new();

    let e = engine(false);
    let mut lanes: Vec<Lane> = (0..threads as u64).map(|t| Lane::new(t, 0)).collect();
    if wanted("routing/offers") {
        results.push(compare("routing/offers", threads, rounds, 400_000, |k, ops| {
            let per_batch = 1_000 / k as u64;
            let took = run_offers(&e, &mut lanes[..k], ops.div_ceil(per_batch * k as u64), per_batch);
            let n = lanes.iter().map(|l| l.n).max().unwrap_or(0);
            lanes.iter_mut().for_each(|l| l.n = n);
            took
        }));
    }
    for (name, paused, ops) in [("routing/assign_cycle", false, 400_000), ("routing/queue_cycle", true, 800_000)] {
        if !wanted(name) {
            continue;
        }
        let e: Arc<_> = engine(paused);
        let mut lanes: Vec<Lane> = (0..threads as u64).map(|t| Lane::new(t, 0)).collect();
        results.push(compare(name, threads, rounds, ops, |k, ops| {
            let took = run_cycles(&e, &mut lanes[..k], ops / k as u64);
            let n = lanes.iter().map(|l| l.n).max().unwrap_or(0);
            lanes.iter_mut().for_each(|l| l.n = n);
            took
        }));
        let audit = e.audit(smista_core::Millis(u64::MAX / 2));
        assert!(audit.iter().all(|v| v.contains("idles")), "the engine ended inconsistent: {audit:?}");
    }
    if wanted("request_path/offer_accept_complete") {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let shared = rt.block_on(request_state());
        let mut next = vec![0u64; threads];
        results.push(compare("request_path/offer_accept_complete", threads, rounds, 100_000, |k, ops| {
            run_requests(&shared, &mut next[..k], ops / k as u64)
        }));
    }

    println!(
        "{:<36} {:>12} {:>12} {:>6} {:>7}   rounds: ratio / control",
        "workload",
        "1 thread /s",
        format!("{threads} threads /s"),
        "ratio",
        "counted"
    );
    for r in &results {
        let per: Vec<String> =
            r.one.iter().zip(&r.many).zip(&r.control).map(|((a, b), c)| format!("{:.2}/{:.2}", b / a, c)).collect();
        println!(
            "{:<36} {:>12.0} {:>12.0} {:>6.2} {:>7}   {}",
            r.name,
            r.one_median,
            r.many_median,
            r.ratio,
            format!("{}/{}", r.rounds_counted, r.one.len()),
            per.join(" ")
        );
    }
    println!("{}", serde_json::json!({ "scaling": results }));
}
