//! Sockets: binding listeners, classifying I/O results, address ranges, the
//! TLS certificate and keys.

pub mod cidr;
pub mod io;
pub mod listener;
pub mod tls;
