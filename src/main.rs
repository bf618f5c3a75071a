//! The `hubbub` binary: flags -> Config -> server::run; nothing else.

use clap::Parser;
use hubbub::config::{Args, Config};

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match Config::from_args(Args::parse()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("hubbub: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = hubbub::server::run(&config) {
        eprintln!("hubbub: {e}");
        std::process::exit(1);
    }
}
