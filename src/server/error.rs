//! Why the server could not start or stopped with an error: one variant per
//! step, each naming what it was doing, so `hubbub` prints a line an operator
//! can act on and the exit code says which kind it was.

use std::io;
use std::net::SocketAddr;

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot raise the open-file limit: {0}")]
    FileLimit(#[source] io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot open the admin port {addr}: {source}")]
    AdminPort {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot start TLS: {0}")]
    Tls(#[source] crate::net::tls::TlsError),
    #[error("cannot start cluster mode: {0}")]
    Cluster(#[source] io::Error),
    #[error("cannot set up {what}: {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("shard {shard} failed: {source}")]
    Shard {
        shard: usize,
        #[source]
        source: io::Error,
    },
    #[error("shard {0} panicked")]
    ShardPanicked(usize),
}

impl StartError {
    /// The process exit code: 2 for a configuration the operator must fix,
    /// 3 when the address is taken, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Config(_) | StartError::Tls(_) => 2,
            StartError::Listen { source, .. } | StartError::AdminPort { source, .. }
                if source.kind() == io::ErrorKind::AddrInUse =>
            {
                3
            }
            _ => 1,
        }
    }

    pub(crate) fn setup(what: &'static str) -> impl FnOnce(io::Error) -> StartError {
        move |source| StartError::Setup { what, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_step_and_codes_the_kind() {
        let addr: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let taken = StartError::Listen {
            addr,
            source: io::Error::from(io::ErrorKind::AddrInUse),
        };
        assert!(taken.to_string().starts_with("cannot listen on 127.0.0.1:80: "));
        assert_eq!(taken.exit_code(), 3);
        let denied = StartError::Listen {
            addr,
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert_eq!(denied.exit_code(), 1);
        assert_eq!(StartError::ShardPanicked(2).to_string(), "shard 2 panicked");
        assert_eq!(StartError::ShardPanicked(2).exit_code(), 1);
    }
}
