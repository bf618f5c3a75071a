//! Why the admin port closed a connection early or answered it with an
//! error of its own (not the router's): counted under
//! `hubbub_admin_refused_total{reason}`, one handle per reason registered
//! at start, so the series exist at 0 and no name is looked up later.

use metrics::Counter;

use super::http::HttpError;
use crate::metrics::names;

/// What the admin port refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The request was not complete within the request deadline: 408, close.
    RequestTimeout,
    /// The response was not taken within the write deadline: closed.
    WriteTimeout,
    /// Closed to make room at the connection cap (the oldest unanswered).
    Evicted,
    /// The head passed its cap: 431.
    HeadTooLarge,
    /// The announced body passed its cap: 413.
    BodyTooLarge,
    /// Not HTTP, a bad `Content-Length`, or a chunked body: 400 or 411.
    BadRequest,
}

impl Refusal {
    pub const ALL: [Refusal; 6] = [
        Refusal::RequestTimeout,
        Refusal::WriteTimeout,
        Refusal::Evicted,
        Refusal::HeadTooLarge,
        Refusal::BodyTooLarge,
        Refusal::BadRequest,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::RequestTimeout => "request_timeout",
            Refusal::WriteTimeout => "write_timeout",
            Refusal::Evicted => "evicted",
            Refusal::HeadTooLarge => "head_too_large",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::BadRequest => "bad_request",
        }
    }
}

impl From<HttpError> for Refusal {
    fn from(e: HttpError) -> Refusal {
        match e {
            HttpError::HeadTooLarge => Refusal::HeadTooLarge,
            HttpError::BodyTooLarge => Refusal::BodyTooLarge,
            HttpError::Malformed | HttpError::LengthRequired => Refusal::BadRequest,
        }
    }
}

/// The counter handles, by reason.
pub(crate) struct Refusals {
    counters: [Counter; Refusal::ALL.len()],
}

impl Refusals {
    /// Registers every reason's series with the installed recorder.
    pub fn register() -> Refusals {
        Refusals {
            counters: Refusal::ALL.map(|r| metrics::counter!(names::ADMIN_REFUSED, "reason" => r.label())),
        }
    }

    pub fn count(&self, refusal: Refusal) {
        self.counters[refusal as usize].increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_discriminant_order() {
        for (i, r) in Refusal::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.label());
        }
    }
}
