//! Replies as the bridge reads them ([`Value`], made from the `redis`
//! crate's values) and commands as it writes them (`encode`: one buffer per
//! pipeline, sent with `Connection::send_packed_command`). The connections
//! themselves are the crate's (see `link`).

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
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
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
}
