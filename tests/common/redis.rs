//! A `redis-server` of a test's own on a loopback port, for the tests of
//! cluster mode (tests/cluster.rs, tests/logs.rs).

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::PATIENCE;

/// A `redis-server` of our own, killed when dropped.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    /// `None` (after saying why) when `redis-server` is not installed.
    pub fn start() -> Option<Redis> {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Redis::start_on(port)
    }

    pub fn start_on(port: u16) -> Option<Redis> {
        Redis::start_with(port, &["--port", &port.to_string()])
    }

    /// A free loopback port.
    pub fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// `redis-server` with `args` (which name the port, or a config file)
    /// on loopback, without persistence; ready once `port` accepts.
    pub fn start_with(port: u16, args: &[&str]) -> Option<Redis> {
        // Its own directory: a replica's sync files never meet another
        // server's (they would all land in the tests' working directory).
        let dir = std::env::temp_dir().join(format!("hubbub-redis-{}-{port}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let spawned = Command::new("redis-server")
            .args(args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            // A replica syncs at once rather than after the diskless delay
            // (not a Sentinel setting).
            .args(if args.contains(&"--sentinel") {
                &[][..]
            } else {
                &["--repl-diskless-sync-delay", "0"][..]
            })
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("SKIPPED: redis-server is not installed (apt-get install -y redis-server)");
                return None;
            }
            Err(e) => panic!("redis-server: {e}"),
        };
        let redis = Redis { child, port };
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs one command, e.g. `["SAVE"]`, and expects it to succeed.
    pub fn run(&self, args: &[&str]) {
        let _: redis::Value = self.query(args);
    }

    /// Runs one command and reads its answer as a `T`.
    pub fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let client = redis::Client::open(self.url()).expect("a redis URL");
        let mut conn = client.get_connection().expect("redis answers");
        let mut cmd = redis::cmd(args[0]);
        cmd.arg(&args[1..]);
        cmd.query(&mut conn).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// The keys matching `pattern` (`KEYS`: a test's small data set only).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = self.query(&["KEYS", pattern]);
        keys.sort();
        keys
    }

    /// `TTL key`: seconds left, `-1` for a key that never expires, `-2`
    /// for none.
    pub fn ttl(&self, key: &str) -> i64 {
        self.query(&["TTL", key])
    }

    /// How many connections are subscribed to `channel` by name (`PUBSUB
    /// NUMSUB`; a node's subscriber connection is one).
    pub fn subscribers(&self, channel: &str) -> u64 {
        let (_, count): (String, u64) = self.query(&["PUBSUB", "NUMSUB", channel]);
        count
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
