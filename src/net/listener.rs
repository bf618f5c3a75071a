//! Listeners bound through socket2 with SO_REUSEADDR and SO_REUSEPORT, one per
//! shard, so the kernel spreads new connections over the shards and a new
//! process can bind the same port while an old one drains.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

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
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// Binds one listener per shard on the same address. When the port is 0 the
/// first bind picks it and the others join that port.
pub fn bind_all(addr: SocketAddr, backlog: u32, count: usize) -> io::Result<Vec<mio::net::TcpListener>> {
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
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let accepted = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        assert!(accepted.nodelay().unwrap());
    }
}
