//! `Utf8State::feed` against `std::str::from_utf8` of the whole input.
//!
//! Input layout: byte 0 is the number of split points (at most 7), then one
//! byte per split point (scaled into the text), then the text.
//!
//! Asserts: valid text is accepted at every split and is complete exactly
//! when `from_utf8` accepts it; text that ends inside a code point is
//! accepted but not complete; invalid text is refused, and no earlier than
//! the piece that brings its first bad sequence, no later than the piece
//! that brings the byte proving it bad (fail fast, RFC 6455 §8.1).
#![no_main]

use hubbub::ws::utf8::Utf8State;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let count = (count & 7) as usize;
    if rest.len() < count {
        return;
    }
    let (picks, text) = rest.split_at(count);
    let mut cuts: Vec<usize> = picks.iter().map(|&p| p as usize * text.len() / 255).collect();
    cuts.sort_unstable();
    cuts.push(text.len());

    let mut state = Utf8State::default();
    let mut start = 0;
    let mut failed: Option<(usize, usize)> = None;
    for &end in &cuts {
        if state.feed(&text[start..end]).is_err() {
            failed = Some((start, end));
            break;
        }
        start = end;
    }

    match std::str::from_utf8(text) {
        Ok(_) => {
            assert_eq!(failed, None, "valid text refused");
            assert!(state.is_complete(), "valid text left incomplete");
        }
        Err(e) => match e.error_len() {
            None => {
                assert_eq!(failed, None, "text cut inside a code point refused");
                assert!(!state.is_complete(), "text cut inside a code point called complete");
            }
            Some(bad_len) => {
                let Some((from, to)) = failed else {
                    panic!("invalid text accepted: {e}");
                };
                let first_bad = e.valid_up_to();
                let proof = (first_bad + bad_len).min(text.len() - 1);
                assert!(
                    to > first_bad,
                    "refused at [{from}..{to}) before the bad byte at {first_bad}"
                );
                assert!(from <= proof, "refused at [{from}..{to}), later than byte {proof}");
            }
        },
    }
});
