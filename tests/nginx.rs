//! deploy/nginx.conf in front of hubbub, through a real nginx on loopback:
//! handshake, echo, close, and a drain seen through the proxy.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// An nginx master started on a temp prefix, stopped by its PID on drop.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    prefix: PathBuf,
}

impl Nginx {
    fn start(upstream: SocketAddr) -> Nginx {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let prefix = std::env::temp_dir().join(format!("hubbub-nginx-{}", std::process::id()));
        std::fs::create_dir_all(prefix.join("logs")).unwrap();
        let site = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx.conf"))
            .unwrap()
            .replace("listen 80;", &format!("listen {addr};"))
            .replace("server 127.0.0.1:8080;", &format!("server {upstream};"));
        let p = prefix.display();
        let main = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log stderr warn;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n access_log off;\n client_body_temp_path {p}/body;\n proxy_temp_path {p}/proxy;\n\
             fastcgi_temp_path {p}/fastcgi;\n uwsgi_temp_path {p}/uwsgi;\n scgi_temp_path {p}/scgi;\n{site}\n}}\n"
        );
        let main = if unsafe { libc::geteuid() } == 0 {
            format!("user root;\n{main}")
        } else {
            main
        };
        std::fs::write(prefix.join("nginx.conf"), main).unwrap();
        let child = Command::new(nginx_binary())
            .args(["-p", &p.to_string(), "-c", &format!("{p}/nginx.conf"), "-e", "stderr"])
            .stdout(Stdio::null())
            .spawn()
            .expect("nginx starts (.ci/run installs it)");
        let deadline = Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "nginx did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { child, addr, prefix }
    }
}

fn nginx_binary() -> &'static str {
    [
        "/usr/sbin/nginx",
        "/usr/local/sbin/nginx",
        "/usr/local/nginx/sbin/nginx",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .unwrap_or("nginx")
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: signalling the nginx master this test started, by its PID:
        // SIGQUIT is its graceful stop, which also stops its worker.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.prefix);
    }
}

#[test]
fn websocket_through_nginx_echoes_closes_and_sees_the_drain() {
    let mut server = Process::spawn(&["--listen", "127.0.0.1:0", "--admin-listen", "off", "--drain-secs", "4"]);
    let nginx = Nginx::start(server.addr);

    // Handshake and echo through the proxy.
    let mut client = open(nginx.addr, "/echo");
    client.send_text("through nginx");
    assert_eq!(client.recv().unwrap().payload, b"through nginx");
    let big = vec![b'x'; 200_000];
    client.send(0x2, true, &big);
    assert_eq!(client.recv().unwrap().payload, big);
    // A client close is echoed back through the proxy.
    client.send(0x8, true, b"\x03\xe8bye");
    assert_eq!(client.recv_close(), Some(1000));
    assert!(client.sees_eof());

    // A drain reaches a client behind the proxy as Close 1001 with the hint.
    let mut client = open(nginx.addr, "/echo");
    client.send_text("before drain");
    assert_eq!(client.recv().unwrap().payload, b"before drain");
    server.signal(libc::SIGTERM);
    let frame = loop {
        let frame = client.recv().expect("a close frame through nginx");
        if frame.opcode == 0x8 {
            break frame;
        }
    };
    assert_eq!(frame.close_code(), Some(1001));
    assert!(String::from_utf8_lossy(&frame.payload[2..]).starts_with("server restarting; reconnect in"));
    client.send(0x8, true, b"\x03\xe9");
    let status = server.wait_exit(PATIENCE).expect("hubbub exits after the drain");
    assert!(status.success(), "{status}");
    drop(nginx);
}
