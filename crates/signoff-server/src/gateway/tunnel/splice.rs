//! The two-way copy of an upgraded connection, and how it stops: either
//! side closes, nothing moves for the idle timeout, the listener sheds the
//! connection, or (what matters most) its session ends.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use signoff::{EndReason, Watch};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::frames::{close_frame, Frames, GOING_AWAY, POLICY_VIOLATION};
use crate::listener::OpenConnection;

/// Bytes read at once in each direction. Small, so that an idle tunnel
/// costs little memory; the copy goes on as fast as the peers read.
const BUFFER: usize = 4096;

/// How long the gateway waits for a client to answer its close frame
/// before it ends the TCP connection anyway.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// How long writing a close frame may take (a client that reads nothing).
const CLOSE_WRITE: Duration = Duration::from_millis(250);

/// What a tunnel needs to know besides its two ends.
pub(super) struct Limits {
    /// The session it runs under: it ends with it. `None` on a public path.
    pub watch: Option<Watch>,
    /// Longest time with no byte either way.
    pub idle: Duration,
    /// It is a WebSocket: it ends with a close frame.
    pub websocket: bool,
    /// The client connection's place in the listener.
    pub held: Option<OpenConnection>,
}

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// Both sides closed (or one failed).
    Closed,
    /// Its session ended.
    SessionEnded(EndReason),
    /// Nothing moved for the idle timeout.
    Idle,
    /// The listener needed the connection for another.
    Shed,
}

/// What a tunnel carried, for the log.
#[derive(Debug, Default)]
pub(super) struct Carried {
    /// Bytes from the client to the upstream.
    pub up: u64,
    /// Bytes from the upstream to the client.
    pub down: u64,
}

/// One direction of the copy.
#[derive(Default)]
struct Direction {
    /// WebSocket frames that went through, if it is a WebSocket.
    frames: Option<Frames>,
    /// A write is in progress: the peer may have part of a chunk.
    writing: bool,
    bytes: u64,
    /// The reading side reached its end.
    finished: bool,
}

impl Direction {
    fn new(websocket: bool) -> Self {
        Self {
            frames: websocket.then(Frames::default),
            ..Self::default()
        }
    }

    /// A frame may be written now without breaking one in the middle.
    fn between_frames(&self) -> bool {
        !self.writing && !self.finished && self.frames.as_ref().is_some_and(Frames::at_boundary)
    }
}

/// Copies between `client` and `upstream` until the tunnel ends; says why.
pub(super) async fn run<C, U>(client: C, upstream: U, limits: Limits) -> (Ending, Carried)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let mut up = Direction::new(limits.websocket);
    let mut down = Direction::new(limits.websocket);
    let last_activity = Activity::new();
    let _busy = limits.held.as_ref().map(OpenConnection::busy);

    let ending = {
        let watch = limits.watch.as_ref();
        // Frames from the client count as activity of the session; frames
        // from the upstream do not (docs/gateway.md, "WebSockets").
        let on_client_bytes = || {
            if let Some(watch) = watch {
                watch.touch();
            }
        };
        let copy = async {
            let to_upstream = pump(
                &mut client_read,
                &mut upstream_write,
                &mut up,
                &last_activity,
                on_client_bytes,
            );
            let to_client = pump(
                &mut upstream_read,
                &mut client_write,
                &mut down,
                &last_activity,
                || {},
            );
            // Both ways until both end; one failing ends the tunnel.
            let _ = tokio::try_join!(to_upstream, to_client);
        };
        let session_end = async {
            match watch {
                Some(watch) => watch.ended().await,
                None => std::future::pending().await,
            }
        };
        let shed = async {
            match &limits.held {
                Some(held) => held.shed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = copy => Ending::Closed,
            reason = session_end => Ending::SessionEnded(reason),
            () = idle(&last_activity, limits.idle) => Ending::Idle,
            () = shed => Ending::Shed,
        }
    };

    if limits.websocket {
        let (code, reason) = match ending {
            Ending::SessionEnded(_) => (POLICY_VIOLATION, "signed out"),
            Ending::Idle => (GOING_AWAY, "idle"),
            Ending::Shed => (GOING_AWAY, "server busy"),
            Ending::Closed => (0, ""),
        };
        if code != 0 {
            // Tell both ends, each only where a frame may start. The
            // client gets a moment to answer, so it sees a clean close.
            if up.between_frames() {
                let mask: [u8; 4] = rand::random();
                let frame = close_frame(code, reason, Some(mask));
                let _ = write_close(&mut upstream_write, &frame).await;
            }
            if down.between_frames() {
                let frame = close_frame(code, reason, None);
                if write_close(&mut client_write, &frame).await.is_ok() {
                    let answer = await_close(&mut client_read, &mut up);
                    let _ = tokio::time::timeout(CLOSE_WAIT, answer).await;
                }
            }
        }
    }
    let _ = tokio::time::timeout(CLOSE_WRITE, client_write.shutdown()).await;
    let _ = tokio::time::timeout(CLOSE_WRITE, upstream_write.shutdown()).await;
    (
        ending,
        Carried {
            up: up.bytes,
            down: down.bytes,
        },
    )
}

/// When a byte last moved either way: shared by both directions of the
/// copy (one task, but its futures must be `Send`).
struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn now(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }
}

/// Copies `from` to `to` until `from` ends (then ends `to`'s writing) or
/// either fails.
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    direction: &mut Direction,
    last_activity: &Activity,
    on_read: impl Fn(),
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = [0u8; BUFFER];
    loop {
        let n = from.read(&mut buffer).await?;
        if n == 0 {
            direction.finished = true;
            return to.shutdown().await;
        }
        last_activity.now();
        on_read();
        direction.writing = true;
        to.write_all(&buffer[..n]).await?;
        to.flush().await?;
        direction.writing = false;
        direction.bytes += n as u64;
        if let Some(frames) = &mut direction.frames {
            frames.advance(&buffer[..n]);
        }
    }
}

/// Resolves once nothing moved either way for `limit`.
async fn idle(last_activity: &Activity, limit: Duration) {
    loop {
        let due = last_activity.last() + limit;
        if due <= Instant::now() {
            return;
        }
        tokio::time::sleep_until(due).await;
    }
}

async fn write_close<W: AsyncWrite + Unpin>(to: &mut W, frame: &[u8]) -> io::Result<()> {
    let write = async {
        to.write_all(frame).await?;
        to.flush().await
    };
    tokio::time::timeout(CLOSE_WRITE, write)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// Reads what the client sends until its own close frame has come (or it
/// stops sending), dropping it.
async fn await_close<R: AsyncRead + Unpin>(from: &mut R, up: &mut Direction) {
    let mut buffer = [0u8; 512];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Some(frames) = &mut up.frames {
                    frames.advance(&buffer[..n]);
                    if frames.saw_close() {
                        return;
                    }
                }
            }
        }
    }
}
