//! Standard output of every subcommand, for `print!` and `println!` in `cmd/` (the macros in
//! `cmd/mod.rs` shadow std's and call [`print()`]). std's macros panic when a write fails, so
//! `smista client snapshot | head -1`, whose reader may leave before the last line, ended in a
//! panic and a backtrace. Here a closed reader (`EPIPE`: Rust ignores SIGPIPE, so the write
//! fails instead of the process being killed) ends the process at once, quietly, with
//! [`STDOUT_CLOSED`]: what a shell reports for a C tool that SIGPIPE killed, so a pipeline under
//! `set -o pipefail` sees the same failure as with `cat` or `grep`, and a script can tell that the
//! output was not all read. Any other write error is reported on stderr, status 1.

use std::io::Write;

/// The exit status when standard output's reader has gone: 128 + SIGPIPE (13).
pub(crate) const STDOUT_CLOSED: i32 = 141;

/// Writes `args` (and a newline if `newline`) to standard output and flushes it; never returns
/// if that fails.
pub(crate) fn print(args: std::fmt::Arguments<'_>, newline: bool) {
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| if newline { out.write_all(b"\n") } else { Ok(()) });
    if let Err(e) = written.and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(STDOUT_CLOSED);
        }
        eprint(format_args!("error: cannot write to standard output: {e}\n"));
        std::process::exit(1);
    }
}

/// Writes `args` to standard error; a failure is ignored (there is nowhere left to say it).
pub(crate) fn eprint(args: std::fmt::Arguments<'_>) {
    let _ = std::io::stderr().lock().write_fmt(args);
}
