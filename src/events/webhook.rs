//! The webhook sink (`--webhook-url`): batches of events POSTed as one
//! JSON array, signed, over keep-alive connections (ureq, synchronous).
//!
//! Signature (docs/EVENTS.md): `X-Hubbub-Timestamp` is the Unix time in
//! seconds when the request was made, and `X-Hubbub-Signature` is
//! `sha256=` and the lowercase hex HMAC-SHA256, keyed with
//! `--webhook-secret`, of `TIMESTAMP.BODY` (the timestamp, a dot, the raw
//! body). Covering the timestamp lets a receiver refuse old requests
//! (replays). `X-Hubbub-Delivery` names the batch and stays the same on its
//! retries, so a receiver can drop a batch it already took.
//!
//! Answers: 2xx takes the batch; 408, 429, 5xx and network errors are
//! retried with backoff; any other status (a 3xx is not followed) refuses
//! it for good, counted as dropped `rejected`.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::emitter::{Outcome, Transport};
use super::held::Held;
use super::json::encode_batch;
use super::WebhookConfig;

pub const SIGNATURE_HEADER: &str = "X-Hubbub-Signature";
pub const TIMESTAMP_HEADER: &str = "X-Hubbub-Timestamp";
pub const DELIVERY_HEADER: &str = "X-Hubbub-Delivery";
/// Bytes of a webhook's answer read (then dropped) to keep the connection.
const MAX_ANSWER_BYTES: u64 = 64 << 10;

/// `sha256=HEX` of HMAC-SHA256(`secret`, `timestamp.body`).
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for byte in digest.iter() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// `url` as logs show it: no credentials, no query (either may carry a
/// secret).
pub fn shown_url(url: &str) -> String {
    let Ok(uri) = url.parse::<ureq::http::Uri>() else {
        return "<unparsable URL>".to_string();
    };
    let host = uri.host().unwrap_or("");
    let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}://{host}{port}{}", uri.scheme_str().unwrap_or("?"), uri.path())
}

pub(crate) struct Webhook {
    url: String,
    /// `url` for logs (`shown_url`).
    shown: String,
    secret: Vec<u8>,
    node: Arc<str>,
    agent: ureq::Agent,
    /// Batches made so far: with the node and `run`, the delivery id.
    batches: u64,
    /// This process's run (its start in Unix milliseconds): a node restarted
    /// with the same `--node-id` numbers its batches anew, and its ids must
    /// not be taken for ones a receiver already saw.
    run: u128,
    /// The body and delivery id of the batch being retried.
    pending: Option<(String, String)>,
}

impl Webhook {
    pub fn new(config: &WebhookConfig, node: Arc<str>) -> Webhook {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            // Loopback and private receivers are the usual case: an HTTP
            // proxy from the environment is never used.
            .proxy(None)
            .build()
            .into();
        Webhook {
            url: config.url.clone(),
            shown: shown_url(&config.url),
            secret: config.secret.clone(),
            node,
            agent,
            batches: 0,
            run: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
            pending: None,
        }
    }

    /// The body and delivery id of `batch`: made when it is `fresh`, kept
    /// for its retries.
    fn body_of(&mut self, batch: &[Held], fresh: bool) -> (String, String) {
        if let (false, Some((body, delivery))) = (fresh, &self.pending) {
            return (body.clone(), delivery.clone());
        }
        self.batches += 1;
        let body = encode_batch(batch, &self.node);
        let delivery = format!("{}-{}-{}", self.node, self.run, self.batches);
        self.pending = Some((body.clone(), delivery.clone()));
        (body, delivery)
    }
}

impl Transport for Webhook {
    fn deliver(&mut self, batch: &[Held], fresh: bool, within: Option<Duration>) -> Outcome {
        let (body, delivery) = self.body_of(batch, fresh);
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let signature = sign(&self.secret, timestamp, body.as_bytes());
        let mut request = self.agent.post(&self.url);
        if let Some(within) = within {
            request = request.config().timeout_global(Some(within)).build();
        }
        let sent = request
            .header("Content-Type", "application/json")
            .header(TIMESTAMP_HEADER, &timestamp.to_string())
            .header(SIGNATURE_HEADER, &signature)
            .header(DELIVERY_HEADER, &delivery)
            .send(body.as_bytes());
        let mut answer = match sent {
            Ok(answer) => answer,
            Err(e) => return Outcome::Retry(format!("POST {}: {e}", self.shown)),
        };
        // Read the (small) answer so the connection can be used again.
        let mut sink = Vec::new();
        let _ = answer
            .body_mut()
            .as_reader()
            .take(MAX_ANSWER_BYTES)
            .read_to_end(&mut sink);
        let status = answer.status().as_u16();
        match status {
            200..=299 => {
                self.pending = None;
                Outcome::Sent
            }
            408 | 429 | 500..=599 => Outcome::Retry(format!("POST {}: answered {status}", self.shown)),
            _ => {
                self.pending = None;
                Outcome::Rejected(format!("POST {}: answered {status}", self.shown))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_show_no_credentials_or_query() {
        assert_eq!(
            shown_url("https://user:pw@app.example.com:8443/hook?token=s3cret"),
            "https://app.example.com:8443/hook"
        );
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: printf '1700000000.[]' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            sign(b"secret", 1_700_000_000, b"[]"),
            "sha256=74f76d8933679a54d6be8c7560a5233b124658241ca5a3b0f09af80d3ea60d78"
        );
    }
}
