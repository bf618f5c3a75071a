//! One admin connection, driven without ever blocking: it gathers its
//! request (bounded in bytes and in time), is answered once, sends the
//! answer as the socket takes it, then lingers briefly so the client reads
//! the answer before the close. Its phase is one of
//!
//! ```text
//! Reading ──(request complete, or refused: 4xx)──► Writing ──(all sent)──► Lingering ──► closed
//!    │ request deadline: 408                          │ write deadline: closed   │ EOF, linger deadline
//! ```
//!
//! A session holds at most its request (the head cap, then the admitted
//! head and body) or its response, never both for long; it never reads
//! while it writes.
//! It does its own socket I/O (through `net::io`) but never waits: the
//! loop in `serve.rs` calls it on readiness and when its deadline passes.

use std::net::Shutdown;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use mio::net::TcpStream;

use super::http::{self, Request, Response, MAX_BODY_BYTES, MAX_OPEN_BODY_BYTES};
use super::refusal::{Refusal, Refusals};
use super::router::{Access, Router};
use super::{LINGER, LINGER_MAX_BYTES, REQUEST_DEADLINE, WRITE_DEADLINE};
use crate::net::io::{self, IoOutcome};

/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 * 1024;

/// What the loop does with a session after driving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Keep,
    Close,
}

enum Phase {
    /// Gathering the request: the bytes so far, and its head once parsed
    /// and admitted by the router.
    Reading { input: Vec<u8>, head: Option<Head> },
    /// The response is in `Session::out`; close if not sent by `deadline`.
    Writing { deadline: Instant },
    /// Answered and the write side shut: wait (bounded) for the client's
    /// EOF, discarding what it still sends, so the close does not reset
    /// the answer away.
    Lingering { deadline: Instant, discarded: usize },
}

struct Head {
    request: Request,
    head_len: usize,
    body_len: usize,
}

pub(crate) struct Session {
    stream: TcpStream,
    accepted: Instant,
    /// Accept order (instants can tie within a turn).
    serial: u64,
    phase: Phase,
    /// Bytes to send (an interim `100 Continue`, then the response) and how
    /// many of them went out.
    out: Vec<u8>,
    sent: usize,
}

impl Session {
    pub fn new(stream: TcpStream, serial: u64, now: Instant) -> Session {
        Session {
            stream,
            accepted: now,
            serial,
            phase: Phase::Reading {
                input: Vec::new(),
                head: None,
            },
            out: Vec::new(),
            sent: 0,
        }
    }

    /// When this session must be looked at even without readiness.
    pub fn deadline(&self) -> Instant {
        match self.phase {
            Phase::Reading { .. } => self.accepted + REQUEST_DEADLINE,
            Phase::Writing { deadline } | Phase::Lingering { deadline, .. } => deadline,
        }
    }

    /// Who goes first when the connection cap is reached (lowest first):
    /// answered sessions (lingering), then the oldest still reading, then
    /// the oldest writing.
    pub(crate) fn eviction_rank(&self) -> (u8, u64) {
        let class = match self.phase {
            Phase::Lingering { .. } => 0,
            Phase::Reading { .. } => 1,
            Phase::Writing { .. } => 2,
        };
        (class, self.serial)
    }

    /// Whether closing this session now leaves a client unanswered.
    pub fn unanswered(&self) -> bool {
        !matches!(self.phase, Phase::Lingering { .. })
    }

    /// The socket is ready (or may be: spurious events are harmless).
    pub(crate) fn on_ready(&mut self, router: &Router, refusals: &Refusals, now: Instant) -> Next {
        if matches!(self.phase, Phase::Reading { .. }) && self.read_request(router, refusals, now) == Next::Close {
            return Next::Close;
        }
        self.send_and_linger(now)
    }

    /// The deadline passed: 408 for an incomplete request, close otherwise.
    pub fn expire(&mut self, refusals: &Refusals, now: Instant) -> Next {
        match self.phase {
            Phase::Reading { .. } => {
                refusals.count(Refusal::RequestTimeout);
                self.respond(&Response::text(408, "request not complete in time\n"), false, now);
                self.send_and_linger(now)
            }
            Phase::Writing { .. } => {
                refusals.count(Refusal::WriteTimeout);
                Next::Close
            }
            Phase::Lingering { .. } => Next::Close,
        }
    }

    /// Reads until the socket is empty or the request is complete (then
    /// answers it, and leaves the rest unread).
    fn read_request(&mut self, router: &Router, refusals: &Refusals, now: Instant) -> Next {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            let Phase::Reading { input, head } = &self.phase else {
                return Next::Keep;
            };
            // Never past the cap: what is held is at most the head cap, or
            // the admitted head and body.
            let want = match head {
                None => http::MAX_HEAD_BYTES - input.len().min(http::MAX_HEAD_BYTES),
                Some(h) => (h.head_len + h.body_len).saturating_sub(input.len()),
            };
            let n = match io::read(&mut self.stream, &mut chunk[..want.clamp(1, READ_CHUNK)]) {
                IoOutcome::Progress(n) => n,
                IoOutcome::WouldBlock => return Next::Keep,
                // Gone before its request was complete: nothing to answer.
                IoOutcome::Closed | IoOutcome::Failed(_) => return Next::Close,
            };
            let Phase::Reading { input, head } = &mut self.phase else {
                return Next::Keep;
            };
            input.extend_from_slice(&chunk[..n]);
            match judge(input, head, &chunk[..n], router) {
                Verdict::More => {
                    if head.as_ref().is_some_and(|h| h.request.expects_continue()) && self.out.is_empty() {
                        self.out.extend_from_slice(http::CONTINUE);
                    }
                }
                Verdict::Answer(response, head_only) => {
                    self.respond(&response, head_only, now);
                    return Next::Keep;
                }
                Verdict::Refuse(e) => {
                    refusals.count(e.into());
                    self.respond(&e.response(), false, now);
                    return Next::Keep;
                }
            }
        }
    }

    /// Queues `response` after whatever is still unsent and starts writing.
    fn respond(&mut self, response: &Response, head_only: bool, now: Instant) {
        self.out.drain(..self.sent);
        self.sent = 0;
        self.out.extend_from_slice(&http::encode(response, head_only));
        self.phase = Phase::Writing {
            deadline: now + WRITE_DEADLINE,
        };
    }

    /// Sends what is queued; once a response is all out, shuts the write
    /// side and lingers.
    fn send_and_linger(&mut self, now: Instant) -> Next {
        while self.sent < self.out.len() {
            match io::write(&mut self.stream, &self.out[self.sent..]) {
                IoOutcome::Progress(n) => self.sent += n,
                IoOutcome::WouldBlock => return Next::Keep,
                IoOutcome::Closed | IoOutcome::Failed(_) => return Next::Close,
            }
        }
        if matches!(self.phase, Phase::Writing { .. }) {
            self.out = Vec::new();
            self.sent = 0;
            let _ = self.stream.shutdown(Shutdown::Write);
            self.phase = Phase::Lingering {
                deadline: now + LINGER,
                discarded: 0,
            };
        }
        match self.phase {
            Phase::Lingering { .. } => self.discard(),
            _ => Next::Keep,
        }
    }

    /// Lingering: drops what the client still sends until its EOF.
    fn discard(&mut self) -> Next {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match io::read(&mut self.stream, &mut chunk) {
                IoOutcome::Progress(n) => {
                    let Phase::Lingering { discarded, .. } = &mut self.phase else {
                        return Next::Close;
                    };
                    *discarded += n;
                    if *discarded > LINGER_MAX_BYTES {
                        return Next::Close;
                    }
                }
                IoOutcome::WouldBlock => return Next::Keep,
                IoOutcome::Closed | IoOutcome::Failed(_) => return Next::Close,
            }
        }
    }
}

/// What the bytes gathered so far call for.
enum Verdict {
    More,
    /// The router's answer (or its refusal from the head); `true`: HEAD.
    Answer(Response, bool),
    /// Refused by the HTTP rules (counted).
    Refuse(http::HttpError),
}

/// Parses the head once a line ends in the new bytes, admits it, and
/// dispatches the request once its body is complete.
fn judge(input: &mut Vec<u8>, head: &mut Option<Head>, new: &[u8], router: &Router) -> Verdict {
    if head.is_none() {
        // A head ends with an empty line: no new line, no need to parse again.
        if !new.contains(&b'\n') && input.len() < http::MAX_HEAD_BYTES {
            return Verdict::More;
        }
        let (request, head_len) = match http::parse_head(input) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Verdict::More,
            Err(e) => return Verdict::Refuse(e),
        };
        let head_only = request.method == "HEAD";
        let cap = match router.admit(&request) {
            Ok(Access::Bearer) => MAX_BODY_BYTES,
            Ok(Access::Open) => MAX_OPEN_BODY_BYTES,
            Err(answer) => return Verdict::Answer(answer, head_only),
        };
        let body_len = match http::body_length(&request, cap) {
            Ok(len) => len,
            Err(e) => return Verdict::Refuse(e),
        };
        // The whole request at once, rather than doubling up to it.
        input.reserve_exact((head_len + body_len).saturating_sub(input.len()));
        *head = Some(Head {
            request,
            head_len,
            body_len,
        });
    }
    let Some(Head {
        request,
        head_len,
        body_len,
    }) = head
    else {
        return Verdict::More;
    };
    let end = *head_len + *body_len;
    if input.len() < end {
        return Verdict::More;
    }
    input.truncate(end);
    request.body = input.split_off(*head_len);
    let head_only = request.method == "HEAD";
    Verdict::Answer(dispatch(router, request), head_only)
}

/// The router's answer. A handler that panics costs its caller a 500, not
/// the admin port of everyone else (the panic hook still logs it).
fn dispatch(router: &Router, request: &Request) -> Response {
    std::panic::catch_unwind(AssertUnwindSafe(|| router.dispatch(request)))
        .unwrap_or_else(|_| Response::text(500, "internal error\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new(Some("k".into()))
            .route("GET", "/healthz", Access::Open, |_| Response::text(200, "ok\n"))
            .route("POST", "/api/echo", Access::Bearer, |r| {
                Response::text(200, r.body.clone())
            })
            .route("GET", "/boom", Access::Open, |_| panic!("a handler bug"))
    }

    /// Feeds `parts` one by one; the status of the answer, if any.
    fn feed(parts: &[&str]) -> Option<u16> {
        let (router, mut input, mut head) = (router(), Vec::new(), None);
        for part in parts {
            input.extend_from_slice(part.as_bytes());
            match judge(&mut input, &mut head, part.as_bytes(), &router) {
                Verdict::More => {}
                Verdict::Answer(response, _) => return Some(response.status),
                Verdict::Refuse(e) => return Some(e.status()),
            }
        }
        None
    }

    #[test]
    fn answers_once_head_and_body_are_in() {
        assert_eq!(feed(&["GET /healthz HTTP/1.1\r\n", "Host: x\r\n"]), None);
        assert_eq!(feed(&["GET /healthz HTTP/1.1\r\n", "Host: x\r\n", "\r\n"]), Some(200));
        let head = "POST /api/echo HTTP/1.1\r\nAuthorization: Bearer k\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(feed(&[head, "ab"]), None);
        assert_eq!(feed(&[head, "ab", "cd"]), Some(200));
    }

    #[test]
    fn refuses_from_the_head_before_any_body() {
        let head = "POST /api/echo HTTP/1.1\r\nContent-Length: 1000\r\n\r\n";
        assert_eq!(feed(&[head]), Some(401));
        let open = "GET /healthz HTTP/1.1\r\nContent-Length: 100000\r\n\r\n";
        assert_eq!(feed(&[open]), Some(413));
    }

    #[test]
    fn a_panicking_handler_costs_only_its_caller() {
        assert_eq!(feed(&["GET /boom HTTP/1.1\r\n\r\n"]), Some(500));
        assert_eq!(feed(&["GET /healthz HTTP/1.1\r\n\r\n"]), Some(200));
    }
}
