//! hubbub-load: the bundled load tester for hubbub and any RFC 6455 (`ws://`) server.
//!
//! One `mio` event loop per process drives every connection (no thread or task per connection);
//! `--procs` multiplies processes and merges their results exactly. Layout:
//! `cli` (flags) -> `app` (one invocation) -> `scenario/*` (what each scenario does) on `engine`
//! (the loop) and `conn` (one connection), which speak the protocol through `handshake` and
//! `codec` and touch sockets only through `net`; `hostile` writes what the hostile scenarios
//! (`trickle`, `flood`) send and no well-behaved client would; `centrifuge` speaks the Centrifuge
//! client protocol over those messages (`--centrifuge`). `stats`, `report`, `plot` and
//! `progress` turn the counts into figures and a verdict (exit status); `coord` and `procs`
//! coordinate worker processes; `sysmem` reads memory.

mod app;
mod centrifuge;
mod cli;
mod clock;
mod codec;
mod conn;
mod coord;
mod engine;
mod handshake;
mod hostile;
mod net;
mod payload;
mod plot;
mod procs;
mod progress;
mod report;
mod scenario;
mod stats;
mod sysmem;
mod target;
mod tls;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version go to stdout and succeed; a bad flag is a run that could not be
        // carried out (1), never confused with a missed threshold (2, clap's own default).
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match app::main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hubbub-load: {e}");
            ExitCode::FAILURE
        }
    }
}
