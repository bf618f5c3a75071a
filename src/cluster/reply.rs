//! Replies as the bridge reads them ([`Value`], made from the `redis`
//! crate's values) and commands as it writes them (`encode`: one buffer per
//! pipeline, sent with `Connection::send_packed_command`). The connections
//! themselves are the crate's (see `link`). Also the readers of the
//! scripts' replies.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::bus::history::{Entry, HistoryRule};
use crate::tick::TICKS_PER_SEC;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Nil,
    Int(i64),
    /// Simple and bulk strings alike.
    Bytes(Vec<u8>),
    Array(Vec<Value>),
    /// An error reply (`-ERR ...`): the command failed, the connection is fine.
    Error(String),
}

impl Value {
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    pub(crate) fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            Value::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }

    pub(crate) fn into_array(self) -> Vec<Value> {
        match self {
            Value::Array(items) => items,
            _ => Vec::new(),
        }
    }
}

/// Appends `args` as a RESP array of bulk strings.
pub fn encode<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    use std::io::Write;
    // Written in place: no `String` per header (this runs per publish).
    // Writing to a `Vec` cannot fail.
    let _ = write!(out, "*{}\r\n", args.len());
    for arg in args {
        let arg = arg.as_ref();
        let _ = write!(out, "${}\r\n", arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

impl From<redis::Value> for Value {
    /// The crate's RESP2/RESP3 value, reduced to the five shapes the bridge
    /// reads (maps and sets become flat arrays, numbers and statuses bytes).
    fn from(value: redis::Value) -> Value {
        use redis::Value as R;
        match value {
            R::Nil => Value::Nil,
            R::Int(n) => Value::Int(n),
            R::BulkString(bytes) => Value::Bytes(bytes),
            R::SimpleString(text) => Value::Bytes(text.into_bytes()),
            R::Okay => Value::Bytes(b"OK".to_vec()),
            R::Array(items) | R::Set(items) => Value::Array(items.into_iter().map(Value::from).collect()),
            R::Map(pairs) => Value::Array(
                pairs
                    .into_iter()
                    .flat_map(|(k, v)| [Value::from(k), Value::from(v)])
                    .collect(),
            ),
            R::Double(n) => Value::Bytes(n.to_string().into_bytes()),
            R::Boolean(b) => Value::Int(i64::from(b)),
            R::VerbatimString { text, .. } => Value::Bytes(text.into_bytes()),
            R::ServerError(e) => Value::Error(e.to_string()),
            other => Value::Error(format!("unexpected reply {other:?}")),
        }
    }
}

/// The strings of an array reply (`''` for anything else).
pub(crate) fn strings(reply: Value) -> impl Iterator<Item = String> {
    reply
        .into_array()
        .into_iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
}

pub(crate) fn epoch_offset(reply: &Value) -> (String, u64) {
    match reply {
        Value::Array(items) if items.len() >= 2 => (
            items[0].as_str().unwrap_or_default().to_string(),
            items[1].as_int().unwrap_or(0) as u64,
        ),
        _ => (String::new(), 0),
    }
}

/// `{epoch, offset, entries}` of the READ script, entries oldest first,
/// without those older than the rule's TTL.
pub(crate) fn read_reply(reply: Value, rule: &HistoryRule) -> (Option<String>, u64, Vec<Entry>) {
    let mut items = reply.into_array().into_iter();
    let epoch = items.next().and_then(|e| e.as_str().map(str::to_string));
    let offset = items.next().and_then(|o| o.as_int()).unwrap_or(0) as u64;
    let oldest = unix_ms().saturating_sub(ttl_secs(rule) * 1000);
    let mut entries: Vec<Entry> = items
        .next()
        .map(Value::into_array)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|entry| {
            let mut parts = entry.into_array().into_iter();
            let id = parts.next()?;
            let offset = id.as_str()?.split('-').next()?.parse().ok()?;
            let fields = parts.next()?.into_array();
            let (mut data, mut at) = (None, 0);
            for pair in fields.chunks(2) {
                match pair[0].as_bytes() {
                    Some(b"d") => data = pair.get(1).and_then(Value::as_str).map(Arc::<str>::from),
                    Some(b"t") => at = pair.get(1).and_then(Value::as_int).unwrap_or(0) as u64,
                    _ => {}
                }
            }
            (at >= oldest).then_some(Entry {
                offset,
                at: 0,
                data: data?,
            })
        })
        .collect();
    entries.sort_by_key(|e| e.offset);
    (epoch, offset, entries)
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn ttl_secs(rule: &HistoryRule) -> u64 {
    (rule.ttl_ticks / TICKS_PER_SEC).max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands_as_bulk_arrays() {
        let mut out = Vec::new();
        encode(&mut out, &["GET", "k"]);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }

    #[test]
    fn crate_values_keep_their_meaning() {
        let parsed = redis::parse_redis_value(b"*3\r\n:42\r\n$-1\r\n-ERR nope\r\n").unwrap();
        let items = Value::from(parsed).into_array();
        assert_eq!(items[0].as_int(), Some(42));
        assert_eq!(items[1], Value::Nil);
        assert!(matches!(&items[2], Value::Error(e) if e.contains("nope")), "{items:?}");
        assert_eq!(Value::from(redis::Value::Okay).as_str(), Some("OK"));
    }

    fn bytes(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    #[test]
    fn read_replies_become_entries_oldest_first_without_expired_ones() {
        let now = unix_ms().to_string();
        let entry = |id: &str, data: &str, t: &str| {
            Value::Array(vec![
                bytes(id),
                Value::Array(vec![bytes("d"), bytes(data), bytes("t"), bytes(t)]),
            ])
        };
        let reply = Value::Array(vec![
            bytes("ep"),
            bytes("7"),
            Value::Array(vec![
                entry("7-0", "\"g\"", &now),
                entry("6-0", "\"f\"", &now),
                entry("5-0", "\"old\"", "1"),
            ]),
        ]);
        let rule = HistoryRule {
            size: 10,
            ttl_ticks: 100,
            max_bytes: usize::MAX,
        };
        let (epoch, offset, entries) = read_reply(reply, &rule);
        assert_eq!((epoch.as_deref(), offset), (Some("ep"), 7));
        assert_eq!(entries.iter().map(|e| e.offset).collect::<Vec<_>>(), [6, 7]);
        let (epoch, _, entries) = read_reply(
            Value::Array(vec![Value::Nil, Value::Int(0), Value::Array(vec![])]),
            &rule,
        );
        assert_eq!((epoch, entries.len()), (None, 0));
    }
}
