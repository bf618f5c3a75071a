//! Owns the socket system calls and the one place where `io::Error`s become outcomes: opening a
//! non-blocking connection from a chosen source address, reading and writing until `WouldBlock`,
//! and naming why a connection failed (the labels the reports count by).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use mio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

/// Why a connection failed or ended. These are the labels under which reports count failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The server refused the TCP connection (nothing listening, or its backlog overflowed).
    Refused,
    /// No answer within the deadline (TCP connect, handshake, or close).
    Timeout,
    /// The connection was reset (RST) or the pipe broke.
    Reset,
    /// The server closed TCP without a close frame.
    Eof,
    /// The server closed TCP in the middle of a frame (or of its handshake response): the
    /// stream was cut short, so a close frame it may have sent after it could not be read.
    EofMidFrame,
    /// The server answered the upgrade with this HTTP status.
    Http(u16),
    /// The server's handshake response was not a valid WebSocket upgrade.
    BadHandshake,
    /// The server sent frames RFC 6455 forbids.
    Protocol,
    /// The server sent a close frame with this code.
    Closed(u16),
    /// No local address or port was free (`EADDRNOTAVAIL`): add `--source-ips`.
    AddrUnavailable,
    /// This process ran out of file descriptors: use `--procs`.
    NoFiles,
    /// The server refused a Centrifuge `connect` or `subscribe` with this error code
    /// (`--centrifuge`).
    Centrifuge(u32),
    /// Anything else.
    Other,
}

impl Reason {
    /// Classifies an I/O error.
    pub fn of(err: &io::Error) -> Reason {
        match err.raw_os_error() {
            Some(libc::ECONNREFUSED) => Reason::Refused,
            Some(libc::ETIMEDOUT) => Reason::Timeout,
            Some(libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED) => Reason::Reset,
            Some(libc::EADDRNOTAVAIL | libc::EADDRINUSE) => Reason::AddrUnavailable,
            Some(libc::EMFILE | libc::ENFILE) => Reason::NoFiles,
            _ => Reason::Other,
        }
    }

    /// The label used in reports and JSON (`refused`, `http_404`, `close_1008`, ...).
    pub fn label(self) -> String {
        match self {
            Reason::Refused => "refused".into(),
            Reason::Timeout => "timeout".into(),
            Reason::Reset => "reset".into(),
            Reason::Eof => "eof".into(),
            Reason::EofMidFrame => "eof_mid_frame".into(),
            Reason::Http(code) => format!("http_{code}"),
            Reason::BadHandshake => "bad_handshake".into(),
            Reason::Protocol => "protocol_error".into(),
            Reason::Closed(code) => format!("close_{code}"),
            Reason::AddrUnavailable => "addr_unavailable".into(),
            Reason::NoFiles => "no_files".into(),
            Reason::Centrifuge(code) => format!("centrifuge_{code}"),
            Reason::Other => "other".into(),
        }
    }
}

/// What one read or write did.
#[derive(Debug)]
pub enum Io {
    /// Moved this many bytes (never zero).
    Done(usize),
    /// The socket has nothing more now; wait for the next readiness event.
    WouldBlock,
    /// The peer closed its side (read returned 0).
    Eof,
    /// The connection failed.
    Failed(Reason),
}

/// Reads once into `buf`, retrying on `EINTR`.
pub fn read(stream: &mut TcpStream, buf: &mut [u8]) -> Io {
    loop {
        return match stream.read(buf) {
            Ok(0) => Io::Eof,
            Ok(n) => Io::Done(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Io::WouldBlock,
            Err(e) => Io::Failed(Reason::of(&e)),
        };
    }
}

/// Writes once from `buf`, retrying on `EINTR`.
pub fn write(stream: &mut TcpStream, buf: &[u8]) -> Io {
    loop {
        return match stream.write(buf) {
            Ok(0) => Io::Failed(Reason::Reset),
            Ok(n) => Io::Done(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Io::WouldBlock,
            Err(e) => Io::Failed(Reason::of(&e)),
        };
    }
}

/// Options for a new client socket.
#[derive(Debug, Clone, Copy, Default)]
pub struct SocketOpts {
    /// Bind to this source address first (with `IP_BIND_ADDRESS_NO_PORT`, so the port is chosen at
    /// connect time per destination, which is what lets ~28K ports per source *and* destination).
    pub source: Option<IpAddr>,
    /// Shrink the kernel receive buffer (the `slow` scenario uses it to fill up quickly).
    pub recv_buffer: Option<usize>,
}

/// Starts a non-blocking connect to `addr`. Completion (or failure) shows up as writability.
pub fn connect(addr: SocketAddr, opts: SocketOpts) -> Result<TcpStream, Reason> {
    start_connect(addr, opts).map_err(|e| Reason::of(&e))
}

fn start_connect(addr: SocketAddr, opts: SocketOpts) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(size) = opts.recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    if let Some(ip) = opts.source {
        set_bind_address_no_port(&socket)?;
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

fn set_bind_address_no_port(socket: &Socket) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a valid fd, a valid pointer to a c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Checks whether a non-blocking connect finished: `Ok(true)` connected, `Ok(false)` still in
/// progress, `Err` failed.
pub fn connect_result(stream: &TcpStream) -> Result<bool, Reason> {
    if let Ok(Some(e)) | Err(e) = stream.take_error() {
        return Err(Reason::of(&e));
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(false),
        Err(e) => Err(Reason::of(&e)),
    }
}

/// Raises the soft open-file limit to the hard limit and returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: valid pointer to an rlimit whose soft limit does not exceed its hard limit.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_stable() {
        assert_eq!(Reason::Http(404).label(), "http_404");
        assert_eq!(Reason::Closed(1008).label(), "close_1008");
        assert_eq!(Reason::EofMidFrame.label(), "eof_mid_frame");
        assert_eq!(
            Reason::of(&io::Error::from_raw_os_error(libc::ECONNREFUSED)),
            Reason::Refused
        );
        assert_eq!(Reason::of(&io::Error::from_raw_os_error(libc::EPIPE)), Reason::Reset);
    }

    #[test]
    fn connect_to_a_closed_port_is_refused() {
        // Bind then drop a listener to find a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let stream = connect(addr, SocketOpts::default()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match connect_result(&stream) {
                Err(reason) => return assert_eq!(reason, Reason::Refused),
                Ok(true) => panic!("nothing listens on {addr}"),
                Ok(false) if std::time::Instant::now() < deadline => std::thread::yield_now(),
                Ok(false) => panic!("connect to {addr} neither failed nor succeeded"),
            }
        }
    }
}
