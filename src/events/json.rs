//! An event as one JSON object (docs/EVENTS.md): the document of a stream
//! entry's `event` field and of each element of a webhook batch.

use super::Event;

/// `event` as a JSON object, with `node` added. A publication's `data` is
/// the client's JSON, copied as is (the hub parsed it, so it is valid).
pub fn encode(event: &Event, node: &str) -> String {
    let mut out = String::with_capacity(160 + event.weight());
    out.push_str("{\"kind\":\"");
    out.push_str(event.kind.label());
    out.push_str("\",\"time_ms\":");
    out.push_str(&event.time_ms.to_string());
    out.push_str(",\"node\":");
    string(&mut out, node);
    let c = event.client;
    // The same id the hooks' `client` and the connect pushes give.
    out.push_str(&format!(",\"client\":\"{}-{}-{}\"", c.shard, c.key, c.generation));
    out.push_str(",\"user\":");
    match &event.user {
        Some(user) => string(&mut out, user),
        None => out.push_str("null"),
    }
    if let Some(channel) = &event.channel {
        out.push_str(",\"channel\":");
        string(&mut out, channel);
    }
    if let Some(data) = &event.data {
        out.push_str(",\"data\":");
        out.push_str(data);
    }
    if let Some(reason) = event.reason {
        out.push_str(",\"reason\":");
        string(&mut out, reason);
    }
    out.push('}');
    out
}

/// Events as a JSON array (a webhook body).
pub(crate) fn encode_batch<E: std::borrow::Borrow<Event>>(events: &[E], node: &str) -> String {
    let mut body = String::from("[");
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&encode(event.borrow(), node));
    }
    body.push(']');
    body
}

fn string(out: &mut String, s: &str) {
    // Serializing a str to JSON cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ClientId, Kind};

    #[test]
    fn every_field_is_valid_json_and_data_is_kept_as_sent() {
        let event = Event {
            kind: Kind::Publish,
            client: ClientId {
                shard: 1,
                key: 7,
                generation: 3,
            },
            user: Some("a\"n\nn".into()),
            channel: Some("chat:1".into()),
            data: Some(r#"{"text":"hi","n":[1,2]}"#.into()),
            reason: None,
            time_ms: 1_700_000_000_123,
        };
        let doc: serde_json::Value = serde_json::from_str(&encode(&event, "node-1")).unwrap();
        assert_eq!(doc["kind"], "publish");
        assert_eq!(doc["client"], "1-7-3");
        assert_eq!(doc["user"], "a\"n\nn");
        assert_eq!(doc["data"]["n"][1], 2);
        assert_eq!(doc["node"], "node-1");
        assert!(doc.get("reason").is_none());
        let batch: serde_json::Value = serde_json::from_str(&encode_batch(&[event.clone(), event], "n")).unwrap();
        assert_eq!(batch.as_array().unwrap().len(), 2);
    }
}
