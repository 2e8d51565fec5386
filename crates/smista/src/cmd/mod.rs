//! One module per subcommand of `smista`: [`serve`], [`check_config`], [`client`],
//! [`ledger_report`] (`smista ledger report`), [`report_intervals`] (`smista report intervals`)
//! and [`dev_credentials`]. Each parses its own arguments and returns the process's exit code.

pub(crate) mod check_config;
pub(crate) mod client;
pub(crate) mod dev_credentials;
pub(crate) mod ledger_report;
pub(crate) mod report_intervals;
pub(crate) mod serve;
