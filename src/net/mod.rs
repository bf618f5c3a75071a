//! Sockets: binding listeners, classifying I/O results, address ranges.

pub mod cidr;
pub mod io;
pub mod listener;
