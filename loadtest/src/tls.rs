//! Owns `wss://`: the client TLS settings every connection of a run shares (`--ca`, `--insecure`)
//! and the per-connection TLS byte path (rustls's buffered client; a load tester's memory per
//! connection is not what is measured).
//!
//! One `ClientConfig` per process, so reconnects resume their sessions from its ticket store
//! (as browsers do) unless `--tls-no-resume` asks for full handshakes only.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::ring::default_provider;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme};
use thiserror::Error;

use crate::net::{Io, Reason};

/// Why the TLS settings cannot be used. The user fixes the flag named.
#[derive(Debug, Error)]
pub enum TlsSetupError {
    /// `--ca` could not be read or holds no certificate.
    #[error("--ca {path}: {reason}")]
    Ca { path: String, reason: String },
    /// A `wss://` target needs a CA to trust: `--ca FILE` or `--insecure`.
    #[error("wss:// needs --ca FILE (the server's CA, PEM) or --insecure")]
    NoTrust,
    /// The target's host is not a valid TLS server name.
    #[error("bad TLS server name {0:?}")]
    Name(String),
}

/// What every connection of a run to a `wss://` target shares.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl TlsSettings {
    /// Settings for `host`: trust `ca` (PEM) or, with `insecure`, any certificate.
    pub fn new(host: &str, ca: Option<&Path>, insecure: bool, resume: bool) -> Result<TlsSettings, TlsSetupError> {
        let provider = Arc::new(default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::Name(e.to_string()))?;
        let mut config = match (ca, insecure) {
            (_, true) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth(),
            (Some(path), false) => builder.with_root_certificates(roots(path)?).with_no_client_auth(),
            (None, false) => return Err(TlsSetupError::NoTrust),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        if !resume {
            config.resumption = Resumption::disabled();
        }
        let name = ServerName::try_from(host.to_string()).map_err(|_| TlsSetupError::Name(host.to_string()))?;
        Ok(TlsSettings {
            config: Arc::new(config),
            name,
        })
    }

    /// A client session for one new connection.
    pub fn session(&self) -> Result<ClientConnection, Reason> {
        ClientConnection::new(Arc::clone(&self.config), self.name.clone()).map_err(|_| Reason::Other)
    }
}

fn roots(path: &Path) -> Result<RootCertStore, TlsSetupError> {
    let bad = |reason: String| TlsSetupError::Ca {
        path: path.display().to_string(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no PEM certificate in the file".into()));
    }
    Ok(roots)
}

/// `--insecure`: accepts any certificate (signatures are still checked, so the handshake costs
/// what a verifying client's does on the server).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Reads plaintext into `buf`: what the session already decrypted, else ciphertext from the
/// socket until a record gives plaintext or the socket has no more. `handshook` is set when the
/// handshake finished during this call.
pub fn read(tls: &mut ClientConnection, stream: &mut TcpStream, buf: &mut [u8], handshook: &mut bool) -> Io {
    loop {
        match tls.reader().read(buf) {
            Ok(0) => return Io::Eof, // close_notify
            Ok(n) => return Io::Done(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Io::Failed(Reason::Eof),
        }
        let was_handshaking = tls.is_handshaking();
        match tls.read_tls(stream) {
            Ok(0) => return Io::Eof,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Io::WouldBlock,
            Err(e) => return Io::Failed(Reason::of(&e)),
        }
        if tls.process_new_packets().is_err() {
            // The alert rustls queued is sent on the way out (best effort).
            let _ = tls.write_tls(stream);
            return Io::Failed(Reason::Protocol);
        }
        if was_handshaking && !tls.is_handshaking() {
            *handshook = true;
        }
    }
}

/// Writes what the session has to send, then moves `data` into it (only once the handshake is
/// done and the socket took everything before, so the socket's backpressure is the client's).
/// Returns plaintext bytes taken, or `Io::WouldBlock` when the socket refused.
pub fn write(tls: &mut ClientConnection, stream: &mut TcpStream, data: &[u8]) -> Io {
    if let failed @ (Io::WouldBlock | Io::Failed(_)) = flush(tls, stream) {
        return failed;
    }
    if data.is_empty() || tls.is_handshaking() {
        return Io::Done(0);
    }
    match tls.writer().write(data) {
        // Encrypted now: written at once, or by the next call (which then says WouldBlock).
        Ok(n) => match flush(tls, stream) {
            Io::Done(_) | Io::WouldBlock => Io::Done(n),
            failed => failed,
        },
        Err(_) => Io::Failed(Reason::Other),
    }
}

fn flush(tls: &mut ClientConnection, stream: &mut TcpStream) -> Io {
    while tls.wants_write() {
        match tls.write_tls(stream) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Io::WouldBlock,
            Err(e) => return Io::Failed(Reason::of(&e)),
        }
    }
    Io::Done(0)
}
