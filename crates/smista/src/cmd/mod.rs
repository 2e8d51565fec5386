//! One module per subcommand of `smista`: [`serve`], [`check_config`], [`client`],
//! [`ledger_report`] (`smista ledger report`), [`report_intervals`] (`smista report intervals`,
//! `budget`), [`report_operators`] (`smista report operators`, `operator-reads`) and
//! [`dev_credentials`]. Each parses its own arguments and returns the process's exit code.
//!
//! Their `print!`, `println!` and `eprintln!` are the macros below, not std's: they write
//! through [`out`], which ends the process quietly with status 141 when standard output's reader
//! has gone (`smista client events | head -1`) instead of panicking, as std's do.

/// std's `println!`, through [`out::print()`]: a closed standard output ends the process quietly.
macro_rules! println {
    () => {
        $crate::cmd::out::print(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::cmd::out::print(format_args!($($arg)*), true)
    };
}

/// std's `print!`, through [`out::print()`].
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::cmd::out::print(format_args!($($arg)*), false)
    };
}

/// std's `eprintln!`, through [`out::eprint`]: a closed standard error is not a panic either.
macro_rules! eprintln {
    ($($arg:tt)*) => {
        $crate::cmd::out::eprint(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) mod out;

pub(crate) mod check_config;
pub(crate) mod client;
pub(crate) mod dev_credentials;
pub(crate) mod ledger_report;
pub(crate) mod report_intervals;
pub(crate) mod report_operators;
pub(crate) mod serve;
