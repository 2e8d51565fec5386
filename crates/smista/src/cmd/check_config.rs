//! `smista check-config FILE`: loads a configuration as `serve` would and prints its precise
//! errors (the roster file's with their line and column), or a one-line summary.

use std::path::Path;
use std::process::ExitCode;

use smista_server::config::Config;

/// `smista check-config`.
pub(crate) fn run(file: &Path) -> ExitCode {
    // The roster file too: its errors name their line and column.
    match Config::load(Some(file)).and_then(|c| c.roster_entries().map(|r| (c, r))) {
        Ok((c, roster)) => {
            println!(
                "{}: ok ({} queues, {} operator groups, {} rostered operators, roster {})",
                file.display(),
                c.queues.len(),
                c.groups.len(),
                roster.len(),
                c.roster.mode(c.auth.configured()).as_str()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
