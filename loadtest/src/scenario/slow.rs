//! Owns the `slow` scenario.
use crate::cli::{Cli, SlowArgs};
use crate::coord::Coord;
use crate::scenario::{Finished, Part, RunError};

/// Runs `slow` in this process.
pub fn run(_cli: &Cli, _args: &SlowArgs, _part: Part, _coord: Coord) -> Result<Finished, RunError> {
    Err(RunError::Usage("not yet".into()))
}
