//! Owns the `churn` scenario.
use crate::cli::{ChurnArgs, Cli};
use crate::coord::Coord;
use crate::scenario::{Finished, Part, RunError};

/// Runs `churn` in this process.
pub fn run(
    _cli: &Cli,
    _args: &ChurnArgs,
    _part: Part,
    _coord: Coord,
) -> Result<Finished, RunError> {
    Err(RunError::Usage("not yet".into()))
}
