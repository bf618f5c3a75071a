//! `cluster::resp::parse`, the RESP2 reader of a shard's own Redis
//! connections, on arbitrary bytes, fed whole and split at every point the
//! input names.
//!
//! Asserts: no panic; a parse never claims more bytes than it was given;
//! the bytes of a reply parse the same whole or cut at any point (a cut
//! one waits: `None`, never an error or another value).
#![no_main]

use hubbub::cluster::resp::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while let Ok(Some((value, used))) = parse(&data[at..]) {
        assert!(used > 0 && at + used <= data.len());
        for cut in 0..used {
            assert_eq!(parse(&data[at..at + cut]), Ok(None), "a reply cut at {cut} must wait");
        }
        assert_eq!(parse(&data[at..at + used]), Ok(Some((value, used))));
        at += used;
    }
});
