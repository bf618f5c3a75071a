//! Owns the `slow` scenario: a share of the clients stop reading and flood the server with echo
//! requests, so the server's backlog for them grows; the server should cut them off with its
//! documented close code (or, when its close frame cannot get through full socket buffers, by
//! closing TCP: both are counted) while the other clients' open-loop echo latency stays low.
//!
//! It runs on the echo driver (see [`echo::Stopped`]); this module only sets it up.

use crate::cli::{Cli, SlowArgs};
use crate::clock::secs_to_ns;
use crate::coord::Coord;
use crate::scenario::echo::{self, EchoPlan, Stopped};
use crate::scenario::{Finished, Part, Plan, RunError};

/// Runs `slow` in this process.
pub fn run(cli: &Cli, args: &SlowArgs, part: Part, coord: Coord) -> Result<Finished, RunError> {
    if !(0.0..=1.0).contains(&args.slow_share) {
        return Err(RunError::Usage("--slow-share must be between 0 and 1".into()));
    }
    let connections = part.share(args.connections);
    let stopped = ((connections as f64) * args.slow_share).round() as u64;
    let plan = EchoPlan {
        plan: Plan {
            connections,
            connect_rate: part.rate(args.connect_rate),
            run_ns: secs_to_ns(args.duration_secs),
            drain_ns: secs_to_ns(args.drain_secs),
            close_ns: secs_to_ns(cli.common.close_timeout_secs),
        },
        size: args.size as usize,
        text: true,
        pipeline: 1,
        rate: Some(part.rate(args.rate)),
        max_messages: u64::MAX,
        stopped: Stopped {
            count: stopped,
            recv_buffer: args.slow_recv_buffer,
            expect_code: args.expect_close_code,
            send_bytes: args.slow_send_bytes,
        },
    };
    echo::run_plan(cli, &args.url, plan, coord)
}
