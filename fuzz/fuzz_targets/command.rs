//! `parse_command`, the /ws JSON command parser, on arbitrary bytes.
//!
//! Asserts: no panic; a parsed publish/send carries `data` that is valid
//! JSON by itself (it is copied verbatim into pushes); the replies built
//! from a result or an error are valid JSON.
#![no_main]

use hubbub::hub::protocol::{self, parse_command, Call};
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;

fuzz_target!(|data: &[u8]| {
    match parse_command(data) {
        Ok(command) => {
            if let Call::Publish { data, channel } = &command.call {
                assert_json(data.get().as_bytes());
                assert_json(&protocol::push_publication(channel, 1, data.get()));
            }
            if let Call::Send { data, .. } = &command.call {
                assert_json(data.get().as_bytes());
                assert_json(&protocol::push_message(Some("u"), data.get()));
            }
            assert_json(&protocol::reply_ok(command.id, "null"));
        }
        Err(bad) => assert_json(&protocol::reply_error(bad.id, bad.code, &bad.message)),
    }
});

fn assert_json(bytes: &[u8]) {
    assert!(
        serde_json::from_slice::<IgnoredAny>(bytes).is_ok(),
        "not JSON: {:?}",
        String::from_utf8_lossy(bytes)
    );
}
