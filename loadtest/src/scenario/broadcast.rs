//! Owns the `broadcast` scenario.
use crate::cli::{BroadcastArgs, Cli};
use crate::coord::Coord;
use crate::scenario::{Finished, Part, RunError};

/// Runs `broadcast` in this process.
pub fn run(
    _cli: &Cli,
    _args: &BroadcastArgs,
    _part: Part,
    _coord: Coord,
) -> Result<Finished, RunError> {
    Err(RunError::Usage("not yet".into()))
}
