//! Listeners bound through socket2 with SO_REUSEADDR and SO_REUSEPORT, one per
//! shard, so the kernel spreads new connections over the shards and a new
//! process can bind the same port while an old one drains.
//!
//! On Linux the listeners also set `TCP_DEFER_ACCEPT`: the kernel hands over a
//! connection only once its first bytes (the upgrade request) have arrived, so
//! the shard's first read right after `accept` finds the request and answers
//! it in the same loop turn, and a client that connects and says nothing costs
//! the server no file descriptor, no slab slot and no wake-up. Consequences,
//! documented in docs/CONNECTION.md:
//! - `--handshake-timeout-secs` starts at the accept, which is now the first
//!   byte (or the end of the defer period), not the TCP handshake;
//! - a connection that sends nothing stays in the kernel (a request socket of
//!   a few hundred bytes, counted in the listener's SYN backlog) for
//!   `DEFER_ACCEPT_SECS` rounded up by the kernel to a SYN-ACK retransmission
//!   boundary (7 s for 5), then the kernel resends a SYN-ACK and accepts the
//!   connection on the client's ACK; from there the handshake timeout applies
//!   as before. A client that has vanished meanwhile is dropped by the kernel
//!   after `net.ipv4.tcp_synack_retries` and never reaches the shard.
//! - Under a SYN flood the kernel's SYN cookies take over and connections are
//!   accepted on the bare ACK, as without the option.
//! - Where the option cannot be set (a sandbox without it), the listener
//!   works without it and a warning says so.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// How long the kernel holds a silent new connection before handing it to a
/// shard anyway (`TCP_DEFER_ACCEPT`, seconds; the kernel rounds up to 7).
/// Browsers and WebSocket libraries send the request at once, so this only
/// delays clients that connect and wait.
pub const DEFER_ACCEPT_SECS: u32 = 5;

/// Binds a non-blocking listener on `addr` with the given accept backlog
/// (mio's own default of 128 is far too small for connect storms).
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux, which
    // saves a setsockopt per connection. Latency over packet count: frames
    // are written whole already.
    socket.set_tcp_nodelay(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // An optimisation, not a requirement: a kernel or sandbox without the
    // option (gVisor, some emulations) still gets a working listener.
    if let Err(e) = set_defer_accept(&socket, DEFER_ACCEPT_SECS) {
        tracing::warn!(error = %e, "TCP_DEFER_ACCEPT not available; accepting on the TCP handshake");
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// Sets `TCP_DEFER_ACCEPT` (see the module docs). socket2 has no setter.
#[cfg(target_os = "linux")]
fn set_defer_accept(socket: &Socket, secs: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;

    let value = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
    // SAFETY: a valid fd owned by `socket`, and a pointer to a c_int with
    // its size, as setsockopt(2) asks for this option.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_defer_accept(_socket: &Socket, _secs: u32) -> io::Result<()> {
    Ok(())
}

/// Binds one listener per shard on the same address. When the port is 0 the
/// first bind picks it and the others join that port.
pub(crate) fn bind_all(addr: SocketAddr, backlog: u32, count: usize) -> io::Result<Vec<mio::net::TcpListener>> {
    let first = bind(addr, backlog)?;
    let bound = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..count {
        listeners.push(bind(bound, backlog)?);
    }
    Ok(listeners)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_binds_every_shard_to_one_port() {
        let listeners = bind_all("127.0.0.1:0".parse().unwrap(), 128, 3).unwrap();
        let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().unwrap().port()).collect();
        assert!(ports[0] != 0 && ports.iter().all(|&p| p == ports[0]));
    }

    #[test]
    fn accepted_sockets_inherit_nodelay() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        // A byte, so the deferred accept does not wait for the kernel's timeout.
        std::io::Write::write_all(&mut client, b"x").unwrap();
        let accepted = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        assert!(accepted.nodelay().unwrap());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn listeners_defer_accept_until_the_request_arrives() {
        use std::io::Write;
        use std::os::fd::AsRawFd;

        let listener = bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid fd and a c_int-sized out buffer with its length.
        let rc = unsafe {
            libc::getsockopt(
                listener.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        // The kernel reports the rounded-up period (7 s for 5).
        assert!(value >= DEFER_ACCEPT_SECS as libc::c_int, "TCP_DEFER_ACCEPT is {value}");

        // A connected client that has sent nothing is not handed over ...
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(matches!(listener.accept(), Err(e) if e.kind() == io::ErrorKind::WouldBlock));
        // ... until its first bytes arrive, which the first read then finds.
        client.write_all(b"GET").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let (mut accepted, _) = loop {
            match listener.accept() {
                Ok(pair) => break pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        };
        let mut buf = [0u8; 8];
        assert_eq!(std::io::Read::read(&mut accepted, &mut buf).unwrap(), 3);
    }
}
