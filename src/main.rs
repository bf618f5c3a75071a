//! The `hubbub` binary: flags, environment and config file -> Config ->
//! server::run; nothing else.

use std::io::IsTerminal;

use hubbub::config::{layers, Config, LogFormat};

fn main() {
    let env = std::env::vars().collect();
    let mut layered = match layers::parse(std::env::args_os().collect(), &env) {
        Ok(layered) => layered,
        Err(layers::LayerError::Clap(e)) => e.exit(),
        Err(e) => fail(2, e),
    };
    init_logs(layered.args.log_format, layered.args.log_level.as_deref());
    for var in &layered.unknown_env {
        tracing::warn!(
            variable = %var,
            "{var} is not a hubbub setting and is ignored (variables are HUBBUB_ plus a flag name, see hubbub --help)"
        );
    }
    let check_only = layered.args.check_config;
    let rendered = check_only.then(|| layers::render(&layered));
    let origins = std::mem::take(&mut layered.origins);
    let config = Config::from_args(layered.args).unwrap_or_else(|e| fail(2, layers::explain(&origins, &e)));
    if let Some(text) = rendered {
        print!("{text}");
        println!(
            "# valid: {} shards, connection capacity decided at start",
            config.shards
        );
        return;
    }
    if let Err(e) = hubbub::server::run(&config) {
        fail(e.exit_code(), e);
    }
}

fn fail(code: i32, e: impl std::fmt::Display) -> ! {
    eprintln!("hubbub: {e}");
    std::process::exit(code);
}

/// Human logs on a terminal, JSON lines otherwise; colours only when stderr
/// is a terminal; the level from `--log-level` (checked when parsed), else
/// `RUST_LOG`, else info.
fn init_logs(format: LogFormat, level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(level) => EnvFilter::try_new(level).unwrap_or_else(|e| fail(2, format!("invalid --log-level: {e}"))),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let terminal = std::io::stderr().is_terminal();
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !terminal,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.with_ansi(terminal).init();
    }
}
