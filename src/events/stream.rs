//! The Redis Stream sink (`--events-stream KEY`): each batch is one
//! pipeline of `XADD KEY MAXLEN ~ N * kind KIND event JSON`, so the stream
//! stays near `--events-stream-maxlen` entries and consumers read it with
//! consumer groups (docs/EVENTS.md). One connection, opened again after
//! any error; a batch that failed part way is sent again whole (at least
//! once).

use std::sync::Arc;
use std::time::Duration;

use super::emitter::{Outcome, Transport};
use super::held::Held;
use super::json::encode;
use super::StreamConfig;

/// Entries per pipeline at most (one round trip).
pub(crate) const PIPELINE: usize = 256;
/// Connect, read and write timeout.
const TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) struct RedisStream {
    config: StreamConfig,
    node: Arc<str>,
    conn: Option<redis::Connection>,
}

impl RedisStream {
    pub fn new(config: &StreamConfig, node: Arc<str>) -> RedisStream {
        RedisStream {
            config: config.clone(),
            node,
            conn: None,
        }
    }

    fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let conn = redis::Client::open(self.config.redis.as_str())?.get_connection_with_timeout(TIMEOUT)?;
        conn.set_read_timeout(Some(TIMEOUT))?;
        conn.set_write_timeout(Some(TIMEOUT))?;
        Ok(conn)
    }
}

impl Transport for RedisStream {
    /// Its Redis calls time out after `TIMEOUT` already: `within` is not
    /// needed.
    fn deliver(&mut self, batch: &[Held], _fresh: bool, _within: Option<Duration>) -> Outcome {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => match self.connect() {
                Ok(conn) => conn,
                Err(e) => return Outcome::Retry(format!("cannot connect to Redis: {e}")),
            },
        };
        let mut pipe = redis::pipe();
        for event in batch {
            pipe.cmd("XADD")
                .arg(&self.config.key)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.config.maxlen)
                .arg("*")
                .arg("kind")
                .arg(event.kind.label())
                .arg("event")
                .arg(encode(event, &self.node))
                .ignore();
        }
        match pipe.query::<()>(&mut conn) {
            Ok(()) => {
                self.conn = Some(conn);
                Outcome::Sent
            }
            // Dropping the connection: its state is unknown after an error.
            Err(e) => Outcome::Retry(format!("XADD to {}: {e}", self.config.key)),
        }
    }
}
