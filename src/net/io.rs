//! The one place `io::ErrorKind` is classified (STYLE habit 5). Everything
//! else matches on `IoOutcome`.

use std::io::{self, IoSlice, Read, Write};

/// What a read or write on a non-blocking socket did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOutcome {
    /// `n > 0` bytes moved.
    Progress(usize),
    /// The socket has nothing (read) or no room (write) now; wait for readiness.
    WouldBlock,
    /// The peer closed its side (read of 0 bytes).
    Closed,
    /// The connection is broken (reset, broken pipe, ...); drop it.
    Failed(io::ErrorKind),
}

/// Classifies a raw I/O result. `Interrupted` is retried by the callers below.
pub(crate) fn classify(result: io::Result<usize>) -> IoOutcome {
    match result {
        Ok(0) => IoOutcome::Closed,
        Ok(n) => IoOutcome::Progress(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => IoOutcome::WouldBlock,
        Err(e) => IoOutcome::Failed(e.kind()),
    }
}

/// Reads once into `buf`, retrying on EINTR.
pub fn read(stream: &mut impl Read, buf: &mut [u8]) -> IoOutcome {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return classify(other),
        }
    }
}

/// Writes once, retrying on EINTR. An empty `buf` is reported as progress of 0.
pub fn write(stream: &mut impl Write, buf: &[u8]) -> IoOutcome {
    if buf.is_empty() {
        return IoOutcome::Progress(0);
    }
    loop {
        match stream.write(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(0) => return IoOutcome::Failed(io::ErrorKind::WriteZero),
            other => return classify(other),
        }
    }
}

/// `writev` of several chunks at once, retrying on EINTR.
pub(crate) fn write_vectored(stream: &mut impl Write, bufs: &[IoSlice<'_>]) -> IoOutcome {
    loop {
        match stream.write_vectored(bufs) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(0) => return IoOutcome::Failed(io::ErrorKind::WriteZero),
            other => return classify(other),
        }
    }
}

/// Whether an accept error means "try again later" (fd limits, aborted
/// handshakes) rather than a broken listener.
pub(crate) fn accept_error_is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::ECONNABORTED | libc::EPERM)
    ) || e.kind() == io::ErrorKind::Interrupted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify(Ok(0)), IoOutcome::Closed);
        assert_eq!(classify(Ok(5)), IoOutcome::Progress(5));
        assert_eq!(classify(Err(io::ErrorKind::WouldBlock.into())), IoOutcome::WouldBlock);
        assert_eq!(
            classify(Err(io::ErrorKind::ConnectionReset.into())),
            IoOutcome::Failed(io::ErrorKind::ConnectionReset)
        );
    }
}
