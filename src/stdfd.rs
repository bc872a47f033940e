//! stdin and stdout for the stdio transport, read and written by the runtime's reactor
//! when they are pipes or sockets.
//!
//! tokio's `stdin()` and `stdout()` (what `rmcp::transport::stdio` gives) run every read
//! and every write on the blocking thread pool: a request line and its answer cost four
//! hand-offs between threads, about half of a `ping`'s round trip. When fd 0 or fd 1 is a
//! pipe or a socket — how MCP clients launch a server (Node's `child_process` uses socket
//! pairs, Python's `subprocess` pipes) — it is made non-blocking and polled by the reactor
//! instead, like any socket.
//!
//! Not when it is a terminal or a file (epoll cannot poll a regular file, and a terminal's
//! flags are the shell's too), and not when it is the same open file as stderr (`2>&1`):
//! `O_NONBLOCK` belongs to the open file description, so stderr's blocking log writes would
//! start failing with `EAGAIN`. Those keep tokio's blocking path. The flag is cleared again
//! when the stream is dropped, since the description may be shared with the parent.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tokio::net::unix::pipe;

/// fd 0 and fd 1, each polled by the reactor when it can be, else through tokio's
/// blocking stdin/stdout. Must be called within the runtime.
pub fn stdio() -> (Stdin, Stdout) {
    let stderr = identity(io::stderr().as_fd());
    let stdin = match open(io::stdin().as_fd(), stderr.as_ref()) {
        Ok(Kind::Pipe(fd)) => {
            pipe::Receiver::from_owned_fd(fd).map(|r| Stdin(Inner::Pipe(Some(r))))
        }
        Ok(Kind::Socket(fd)) => socket(fd).map(|s| Stdin(Inner::Socket(Some(s)))),
        Ok(Kind::Other) => Ok(Stdin(Inner::Blocking(tokio::io::stdin()))),
        Err(err) => Err(err),
    }
    .unwrap_or_else(|err| {
        tracing::debug!(%err, "stdin stays on the blocking path");
        Stdin(Inner::Blocking(tokio::io::stdin()))
    });
    let stdout = match open(io::stdout().as_fd(), stderr.as_ref()) {
        Ok(Kind::Pipe(fd)) => pipe::Sender::from_owned_fd(fd).map(|w| Stdout(Inner::Pipe(Some(w)))),
        Ok(Kind::Socket(fd)) => socket(fd).map(|s| Stdout(Inner::Socket(Some(s)))),
        Ok(Kind::Other) => Ok(Stdout(Inner::Blocking(tokio::io::stdout()))),
        Err(err) => Err(err),
    }
    .unwrap_or_else(|err| {
        tracing::debug!(%err, "stdout stays on the blocking path");
        Stdout(Inner::Blocking(tokio::io::stdout()))
    });
    tracing::debug!(
        stdin = stdin.0.describe(),
        stdout = stdout.0.describe(),
        "stdio"
    );
    (stdin, stdout)
}

/// The MCP client's end of the conversation.
pub struct Stdin(Inner<pipe::Receiver, tokio::io::Stdin>);

/// Where the answers go.
pub struct Stdout(Inner<pipe::Sender, tokio::io::Stdout>);

enum Inner<P: Pipe, B> {
    // Options only so that `Drop` can take them back to blocking mode.
    Pipe(Option<P>),
    Socket(Option<UnixStream>),
    Blocking(B),
}

impl<P: Pipe, B> Inner<P, B> {
    fn describe(&self) -> &'static str {
        match self {
            Inner::Pipe(_) => "pipe, polled",
            Inner::Socket(_) => "socket, polled",
            Inner::Blocking(_) => "blocking",
        }
    }
}

enum Kind {
    Pipe(OwnedFd),
    Socket(OwnedFd),
    Other,
}

/// A file's identity: its device and inode.
fn identity(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    let file = File::from(fd.try_clone_to_owned().ok()?);
    let meta = file.metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// What `fd` is, with a duplicate of it to poll when it can be polled.
fn open(fd: BorrowedFd<'_>, stderr: Option<&(u64, u64)>) -> io::Result<Kind> {
    let file = File::from(fd.try_clone_to_owned()?);
    let meta = file.metadata()?;
    if stderr == Some(&(meta.dev(), meta.ino())) {
        return Ok(Kind::Other);
    }
    let kind = meta.file_type();
    Ok(if kind.is_fifo() {
        Kind::Pipe(file.into())
    } else if kind.is_socket() {
        Kind::Socket(file.into())
    } else {
        Kind::Other
    })
}

fn socket(fd: OwnedFd) -> io::Result<UnixStream> {
    // Any stream socket reads and writes the same way; the type only lends its methods.
    let socket = std::os::unix::net::UnixStream::from(fd);
    socket.set_nonblocking(true)?;
    UnixStream::from_std(socket)
}

fn gone() -> io::Error {
    io::Error::other("the stream was already closed")
}

impl AsyncRead for Stdin {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.0 {
            Inner::Pipe(Some(pipe)) => Pin::new(pipe).poll_read(cx, buf),
            Inner::Socket(Some(socket)) => Pin::new(socket).poll_read(cx, buf),
            Inner::Blocking(stdin) => Pin::new(stdin).poll_read(cx, buf),
            Inner::Pipe(None) | Inner::Socket(None) => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for Stdout {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.0 {
            Inner::Pipe(Some(pipe)) => Pin::new(pipe).poll_write(cx, buf),
            Inner::Socket(Some(socket)) => Pin::new(socket).poll_write(cx, buf),
            Inner::Blocking(stdout) => Pin::new(stdout).poll_write(cx, buf),
            Inner::Pipe(None) | Inner::Socket(None) => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.0 {
            Inner::Pipe(Some(pipe)) => Pin::new(pipe).poll_flush(cx),
            Inner::Socket(Some(socket)) => Pin::new(socket).poll_flush(cx),
            Inner::Blocking(stdout) => Pin::new(stdout).poll_flush(cx),
            Inner::Pipe(None) | Inner::Socket(None) => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.0 {
            // Shutting a socket down would end the client's reading side for every holder
            // of it; dropping the duplicate is enough.
            Inner::Pipe(Some(_)) | Inner::Socket(Some(_)) => Poll::Ready(Ok(())),
            Inner::Blocking(stdout) => Pin::new(stdout).poll_shutdown(cx),
            Inner::Pipe(None) | Inner::Socket(None) => Poll::Ready(Err(gone())),
        }
    }
}

/// A pipe that can be put back in blocking mode.
trait Pipe {
    fn restore(self);
}

impl Pipe for pipe::Receiver {
    fn restore(self) {
        let _ = self.into_blocking_fd();
    }
}

impl Pipe for pipe::Sender {
    fn restore(self) {
        let _ = self.into_blocking_fd();
    }
}

/// Back to blocking mode, as the description was found.
impl<P: Pipe, B> Drop for Inner<P, B> {
    fn drop(&mut self) {
        match self {
            Inner::Pipe(pipe) => {
                if let Some(pipe) = pipe.take() {
                    pipe.restore();
                }
            }
            Inner::Socket(socket) => restore_socket(socket.take()),
            Inner::Blocking(_) => {}
        }
    }
}

fn restore_socket(socket: Option<UnixStream>) {
    if let Some(Ok(socket)) = socket.map(UnixStream::into_std) {
        let _ = socket.set_nonblocking(false);
    }
}
