//! Cluster mode on Redis as operators run it: a password (and an ACL user),
//! TLS on a certificate made for the test, and Sentinel following a
//! failover without a restart. Each test starts its own `redis-server`
//! processes on loopback (killed by PID at the end) and skips, saying so,
//! only when a binary is absent.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cluster::*;
use common::redis::Redis;
use common::*;
use serde_json::json;

fn arg(text: &str) -> &str {
    text
}

#[test]
fn a_password_and_an_acl_user_both_join_the_cluster() {
    let port = Redis::free_port();
    let args = [
        "--port",
        &port.to_string(),
        "--requirepass",
        "s3cret",
        "--user",
        "hub",
        "on",
        ">hubpass",
        "~*",
        "&*",
        "+@all",
    ];
    let Some(_redis) = Redis::start_with(port, &args.map(arg)) else {
        return;
    };
    let default_user = format!("redis://:s3cret@127.0.0.1:{port}");
    let acl_user = format!("redis://hub:hubpass@127.0.0.1:{port}/0");
    let a = node_on(&["--redis", &default_user], "a", &[]);
    let b = node_on(&["--redis", &acl_user], "b", &[]);
    wait_cluster(&a, 2);
    crosses(&a, &b, "auth");
    // A wrong password never brings the link up; the node still serves.
    let wrong = format!("redis://:nope@127.0.0.1:{port}");
    let c = node_on(&["--redis", &wrong], "c", &[]);
    std::thread::sleep(Duration::from_millis(500));
    let (_, stats) = api(c.admin.unwrap(), "GET", "/api/stats", "");
    assert_eq!(stats["cluster"]["link_up"], false, "{stats}");
    let mut local = WsClient::open(c.addr, "");
    let reply = local.call("subscribe", json!({"channel": "auth"}));
    assert_eq!(reply["error"]["code"], 108, "{reply}");
}

/// A CA and a certificate for 127.0.0.1 signed by it, made with `openssl`
/// in `dir`; `None` when `openssl` is absent.
fn make_certificates(dir: &Path) -> Option<()> {
    let run = |args: &[&str]| {
        let status = Command::new("openssl").current_dir(dir).args(args).output();
        match status {
            Ok(out) if out.status.success() => Some(()),
            Ok(out) => panic!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr)),
            Err(_) => None,
        }
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=hubbub test CA",
        ],
    ]
    .concat())?;
    run(&[
        &["req"][..],
        &ec,
        &["-keyout", "redis.key", "-out", "redis.csr", "-subj", "/CN=localhost"],
    ]
    .concat())?;
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "redis.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "redis.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ])
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hubbub-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn rediss_with_a_private_ca_joins_the_cluster() {
    let dir = temp_dir("tls");
    if make_certificates(&dir).is_none() {
        eprintln!("SKIPPED: openssl is not installed");
        return;
    }
    let file = |name: &str| dir.join(name).display().to_string();
    let port = Redis::free_port();
    let args = [
        "--port",
        "0",
        "--tls-port",
        &port.to_string(),
        "--tls-cert-file",
        &file("redis.pem"),
        "--tls-key-file",
        &file("redis.key"),
        "--tls-ca-cert-file",
        &file("ca.pem"),
        "--tls-auth-clients",
        "no",
    ];
    let Some(_redis) = Redis::start_with(port, &args.map(arg)) else {
        return;
    };
    let url = format!("rediss://127.0.0.1:{port}");
    let ca = file("ca.pem");
    let a = node_on(&["--redis", &url, "--redis-ca-file", &ca], "a", &[]);
    let b = node_on(&["--redis", &url, "--redis-ca-file", &ca], "b", &[]);
    wait_cluster(&a, 2);
    crosses(&a, &b, "tls");
    // Without the CA the certificate is not trusted: the link stays down.
    let untrusting = node_on(&["--redis", &url], "c", &[]);
    std::thread::sleep(Duration::from_millis(500));
    let (_, stats) = api(untrusting.admin.unwrap(), "GET", "/api/stats", "");
    assert_eq!(stats["cluster"]["link_up"], false, "{stats}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `INFO replication` of the server on `port` contains `needle`.
fn replication_shows(port: u16, needle: &str) -> bool {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "replication"])
        .output();
    out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(needle))
}

fn sentinel(dir: &Path, port: u16, master: u16) -> Option<Redis> {
    let conf = dir.join(format!("sentinel-{port}.conf"));
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor main 127.0.0.1 {master} 1\n\
             sentinel down-after-milliseconds main 800\nsentinel failover-timeout main 4000\n",
            dir.display()
        ),
    )
    .unwrap();
    let conf = conf.display().to_string();
    Redis::start_with(port, &[&conf, "--sentinel"])
}

#[test]
fn a_sentinel_failover_is_followed_without_a_restart() {
    let dir = temp_dir("sentinel");
    let (master_port, replica_port) = (Redis::free_port(), Redis::free_port());
    let Some(mut master) = Redis::start_on(master_port) else {
        return;
    };
    let replica_of = [
        "--port",
        &replica_port.to_string(),
        "--replicaof",
        "127.0.0.1",
        &master_port.to_string(),
    ];
    let _replica = Redis::start_with(replica_port, &replica_of.map(arg)).expect("replica starts");
    wait_until("the replica in sync", || {
        replication_shows(replica_port, "master_link_status:up").then_some(())
    });
    let (s1, s2) = (Redis::free_port(), Redis::free_port());
    let _sentinels = [
        sentinel(&dir, s1, master_port).unwrap(),
        sentinel(&dir, s2, master_port).unwrap(),
    ];
    let (s1, s2) = (format!("127.0.0.1:{s1}"), format!("127.0.0.1:{s2}"));
    let link = [
        "--redis-sentinel",
        &s1,
        "--redis-sentinel",
        &s2,
        "--redis-master-name",
        "main",
    ];
    let (a, b) = (node_on(&link, "a", &[]), node_on(&link, "b", &[]));
    wait_cluster(&a, 2);
    crosses(&a, &b, "before");
    master.kill();
    wait_until("the replica promoted", || {
        replication_shows(replica_port, "role:master").then_some(())
    });
    wait_cluster(&a, 2);
    wait_cluster(&b, 2);
    crosses(&a, &b, "after");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_silent_first_sentinel_costs_one_timeout_per_reconnect_not_one_per_shard() {
    // The first sentinel named takes connections and never answers (a host
    // half down): each question to it costs REDIS_TIMEOUT. The bridge opens
    // a connection for every shard (and the subscriber's): asked once per
    // round, not once per connection, or the node's last shards publish
    // seconds after it is up, and its command thread (heartbeats, syncs)
    // stands still meanwhile.
    let dir = temp_dir("silent-sentinel");
    let master_port = Redis::free_port();
    let Some(_master) = Redis::start_on(master_port) else {
        return;
    };
    let sentinel_port = Redis::free_port();
    let _sentinel = sentinel(&dir, sentinel_port, master_port).unwrap();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let asked = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&asked);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().take(100).flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    let real = format!("127.0.0.1:{sentinel_port}");
    let link = [
        "--redis-sentinel",
        &silent_addr,
        "--redis-sentinel",
        &real,
        "--redis-master-name",
        "main",
    ];
    let a = node_on(&link, "a", &["--shards", "4"]);
    wait_cluster(&a, 1);
    // One publish per channel, all at once: channels of every shard.
    let mut client = WsClient::open(a.addr, "");
    let count = 24;
    for i in 0..count {
        let command = json!({"id": i, "method": "publish", "params": {"channel": format!("c{i}"), "data": i}});
        client.raw.send_text(&command.to_string());
    }
    let mut failed = Vec::new();
    for _ in 0..count {
        let reply = loop {
            let message = client.push().expect("connection open");
            if message.get("id").is_some() {
                break message;
            }
        };
        if reply.get("result").is_none() {
            failed.push(reply);
        }
    }
    assert!(failed.is_empty(), "{} of {count} failed: {failed:?}", failed.len());
    let asked = asked.load(Ordering::SeqCst);
    assert!(asked <= 3, "the silent sentinel was asked {asked} times");
    let _ = std::fs::remove_dir_all(&dir);
}
