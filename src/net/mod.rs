//! Sockets: binding listeners and classifying I/O results.

pub mod io;
pub mod listener;
