//! `smista check-config FILE`: loads a configuration as `serve` would and prints its precise
//! errors, or a one-line summary.

use std::path::Path;
use std::process::ExitCode;

use smista_server::config::Config;

/// `smista check-config`.
pub(crate) fn run(file: &Path) -> ExitCode {
    match Config::load(Some(file)) {
        Ok(c) => {
            println!("{}: ok ({} queues, {} operator groups)", file.display(), c.queues.len(), c.groups.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
