//! `smista dev-credentials`: a CA, certificates, a JWKS, tokens, API keys and a secure demo
//! configuration using them (`smista_client::mint` over the server's embedded demo). Never for
//! production.

use std::path::PathBuf;
use std::process::ExitCode;

/// `smista dev-credentials`.
#[derive(Debug, clap::Args)]
pub(crate) struct DevCredentialsArgs {
    /// Output directory (created owner-only).
    #[arg(long, default_value = "./smista-dev-credentials")]
    out: PathBuf,
    /// Operators to mint desk tokens for (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "op-101,op-201")]
    operators: Vec<String>,
    /// Names the server certificate is valid for (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1,::1")]
    hosts: Vec<String>,
}

/// Mints into `args.out` and lists what it wrote.
pub(crate) fn run(args: DevCredentialsArgs) -> ExitCode {
    let DevCredentialsArgs { out, operators, hosts } = args;
    let mut o = smista_client::mint::Options::new(&out);
    o.operators = operators;
    o.hosts = hosts;
    match smista_client::mint::mint(&o, smista_server::config::DEMO) {
        Ok(m) => {
            println!("minted in {} (development only):", out.display());
            println!("  configuration  {}", m.config.display());
            println!("  roster         {}", m.roster.display());
            println!("  CA             {}", m.ca.display());
            println!("  platform mTLS  {} + {}", m.platform_cert.display(), m.platform_key.display());
            println!("  platform key   {}", m.platform_key_token.display());
            println!("  admin key      {}", m.admin_key.display());
            println!("  supervisor     {}", m.supervisor_token.display());
            for (op, f) in &m.desk_tokens {
                println!("  desk {op:<9} {}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
