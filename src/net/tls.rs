//! The TLS settings every shard accepts `wss://` with: the certificate and
//! key (PEM files, reloaded on SIGHUP), the session-ticket key, the protocol
//! versions and ALPN.
//!
//! One `TlsAcceptor` is shared by all shards. It holds the current
//! `rustls::ServerConfig` behind a lock taken once per accepted socket (a
//! read lock, uncontended but for the rare reload), so a reload changes what
//! new handshakes use and nothing about the connections already open.
//!
//! Resumption is stateless: one ticketer (`rustls::crypto::ring::Ticketer`)
//! is made at start and shared by every shard and every reloaded config, so
//! a ticket issued by one shard resumes on any other, before and after a
//! certificate reload. It rotates its key every 6 hours and accepts tickets
//! for 12. No server-side session cache is kept (no lock, no memory per
//! session).
//!
//! This module owns no socket and no per-connection state: that is
//! `conn::tls`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::ring::{default_provider, Ticketer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{NoServerSessionStorage, ProducesTickets};
use rustls::ServerConfig;

/// The one ALPN protocol offered: WebSockets start as HTTP/1.1.
pub const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// Why the certificate or key could not be used; the operator fixes the file
/// the message names (at start the server refuses to run; on SIGHUP it
/// keeps the pair it had).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("{path}: {reason}")]
    Read { path: String, reason: String },
    /// The file holds no PEM certificate (`--tls-cert`).
    #[error("{0}: no PEM certificate (BEGIN CERTIFICATE) in the file")]
    NoCertificate(String),
    /// The file's PEM could not be parsed.
    #[error("{path}: {reason}")]
    Pem { path: String, reason: String },
    /// The file holds no usable private key (`--tls-key`: PKCS#8, PKCS#1 or SEC1 PEM).
    #[error("{0}: no PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) in the file")]
    NoKey(String),
    /// The key is not one the crypto provider can use, or it does not match
    /// the certificate.
    #[error("certificate {cert} and key {key}: {reason}")]
    Mismatch { cert: String, key: String, reason: String },
    /// The session-ticket key could not be made (no system randomness).
    #[error("session tickets: {0}")]
    Ticketer(String),
}

/// Where the certificate chain and key are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// Reads and checks both files: the chain parses, the key parses, and
    /// the key belongs to the first certificate. What `--check-config` runs.
    pub fn load(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        let cert_text = read(&self.cert)?;
        let chain = CertificateDer::pem_slice_iter(&cert_text)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem {
                path: shown(&self.cert),
                reason: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate(shown(&self.cert)));
        }
        let key_text = read(&self.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_text).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey(shown(&self.key)),
            e => TlsError::Pem {
                path: shown(&self.key),
                reason: e.to_string(),
            },
        })?;
        Ok((chain, key))
    }

    /// A server config for this pair, with `ticketer` for resumption.
    pub fn server_config(&self, ticketer: &Arc<dyn ProducesTickets>) -> Result<Arc<ServerConfig>, TlsError> {
        let (chain, key) = self.load()?;
        let mismatch = |e: rustls::Error| TlsError::Mismatch {
            cert: shown(&self.cert),
            key: shown(&self.key),
            reason: e.to_string(),
        };
        let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(mismatch)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(mismatch)?;
        config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
        config.ticketer = Arc::clone(ticketer);
        config.session_storage = Arc::new(NoServerSessionStorage {});
        // One ticket is enough for a client that reconnects once at a time,
        // and it halves the bytes written after each full handshake.
        config.send_tls13_tickets = 1;
        // After the handshake the traffic secrets move to our own record
        // layer (conn/record.rs), so that rustls's per-connection state can
        // be dropped: an idle session keeps raw keys, not 3 KiB of rustls.
        config.enable_secret_extraction = true;
        Ok(Arc::new(config))
    }

    /// Checks the pair without keeping it (`--check-config`, flag parsing).
    pub fn check(&self) -> Result<(), TlsError> {
        let ticketer = new_ticketer()?;
        self.server_config(&ticketer).map(|_| ())
    }
}

/// The shared, reloadable TLS settings (one per process).
pub struct TlsAcceptor {
    files: TlsFiles,
    ticketer: Arc<dyn ProducesTickets>,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsAcceptor {
    /// Loads the pair; fails with the reason if either file is unusable.
    pub fn new(files: TlsFiles) -> Result<Arc<TlsAcceptor>, TlsError> {
        let ticketer = new_ticketer()?;
        let config = files.server_config(&ticketer)?;
        Ok(Arc::new(TlsAcceptor {
            files,
            ticketer,
            current: RwLock::new(config),
        }))
    }

    /// The config new handshakes use now.
    pub fn config(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(config) => Arc::clone(&config),
            // A reload never panics while holding the lock; recover anyway.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Reads the files again. On success new handshakes use the new pair
    /// (open connections keep theirs); on failure the old pair stays and
    /// the error says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = self.files.server_config(&self.ticketer)?;
        match self.current.write() {
            Ok(mut current) => *current = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

fn new_ticketer() -> Result<Arc<dyn ProducesTickets>, TlsError> {
    Ticketer::new().map_err(|e| TlsError::Ticketer(e.to_string()))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|e| TlsError::Read {
        path: shown(path),
        reason: e.to_string(),
    })
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn unusable_files_say_why() {
        let dir = std::env::temp_dir().join(format!("hubbub-tls-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let empty = write(&dir, "empty.pem", "");
        let files = TlsFiles {
            cert: dir.join("missing.pem"),
            key: empty.clone(),
        };
        assert!(matches!(files.check(), Err(TlsError::Read { .. })));
        let files = TlsFiles {
            cert: empty.clone(),
            key: empty.clone(),
        };
        assert!(matches!(files.check(), Err(TlsError::NoCertificate(_))));
        let _ = fs::remove_dir_all(&dir);
    }
}
