//! A Redis connection spoken directly (RESP2), for the two hot paths: the
//! queue that publishes (`publisher.rs`) and the subscription that receives
//! (`subscriber.rs`).
//!
//! redis-rs runs a driver task behind each of its connections and hands
//! every command and every pub/sub message across a channel to it: one more
//! task wake-up on each side of every message that crosses nodes, which at
//! low rates costs a parked thread's wake-up (tens of µs on a small
//! machine). Here the task that needs the connection owns the socket. The
//! rest (queries, heartbeats, scripts run once) keeps redis-rs.
//!
//! Connection settings come from the redis-rs `ConnectionInfo` of the
//! `--redis-url`: TCP or a Unix socket, AUTH with the URL's user and
//! password, and SELECT of its database.

use bytes::{Buf, BytesMut};
use redis::{ConnectionAddr, ConnectionInfo};
use std::ops::Range;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Larger than anything a node publishes (a relayed frame is capped well
/// below this); a longer bulk string means the stream is not what we think.
const MAX_BULK: usize = 64 << 20;
/// Longest array accepted: pub/sub pushes have 3 elements, our scripts
/// return numbers.
const MAX_ARRAY: usize = 1024;
const MAX_DEPTH: usize = 4;
/// What one read asks the kernel for, at least.
const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RespError {
    #[error("redis connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("redis closed the connection")]
    Closed,
    #[error("redis refused: {0}")]
    Refused(String),
    #[error("unexpected from redis: {0}")]
    Protocol(&'static str),
    #[error("--redis-url: TLS is not supported")]
    Unsupported,
    #[error("redis did not answer in time")]
    TimedOut,
}

/// `work`, or [`RespError::TimedOut`] once `limit` has passed.
pub async fn within<T>(
    limit: Duration,
    work: impl Future<Output = Result<T, RespError>>,
) -> Result<T, RespError> {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or(Err(RespError::TimedOut))
}

impl From<RespError> for redis::RedisError {
    /// As an I/O error: whatever went wrong, the connection is given up and
    /// made again.
    fn from(e: RespError) -> Self {
        redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            e.to_string(),
        ))
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// The RESP2 values a connection can receive.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Frame>),
}

pub struct Conn {
    io: Box<dyn Io>,
    buf: BytesMut,
}

impl Conn {
    /// Connects, authenticates, selects the database and names the
    /// connection `name` (what `CLIENT LIST` shows operators). Callers
    /// bound it with a timeout.
    pub async fn connect(info: &ConnectionInfo, name: &str) -> Result<Conn, RespError> {
        let io: Box<dyn Io> = match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                tcp.set_nodelay(true)?;
                Box::new(tcp)
            }
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
            _ => return Err(RespError::Unsupported),
        };
        let mut conn = Conn {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
        };
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            let mut auth = vec!["AUTH"];
            auth.extend(settings.username());
            auth.push(password);
            conn.expect_ok(&auth).await?;
        }
        if settings.db() != 0 {
            conn.expect_ok(&["SELECT", &settings.db().to_string()])
                .await?;
        }
        let name: String = name
            .chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '_' })
            .collect();
        // A courtesy to operators: an ACL that forbids CLIENT refuses it,
        // and the connection works all the same.
        conn.write(&command(&["CLIENT", "SETNAME", &name])).await?;
        match conn.read().await? {
            Frame::Simple(_) | Frame::Error(_) => Ok(conn),
            _ => Err(RespError::Protocol("an odd answer to CLIENT SETNAME")),
        }
    }

    async fn expect_ok(&mut self, args: &[&str]) -> Result<(), RespError> {
        self.write(&command(args)).await?;
        match self.read().await? {
            Frame::Simple(_) => Ok(()),
            Frame::Error(e) => Err(RespError::Refused(e)),
            _ => Err(RespError::Protocol("an odd answer to AUTH or SELECT")),
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), RespError> {
        self.io.write_all(bytes).await?;
        Ok(())
    }

    /// The next frame. Cancel-safe: what was read stays in the buffer for
    /// the next call.
    pub async fn read(&mut self) -> Result<Frame, RespError> {
        loop {
            if let Some((frame, used)) = parse(&self.buf)? {
                self.buf.advance(used);
                return Ok(frame);
            }
            self.buf.reserve(READ_CHUNK);
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(RespError::Closed);
            }
        }
    }
}

/// A command as a RESP array of bulk strings.
pub fn command(args: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One whole frame from the front of `buf` and the bytes it took, or `None`
/// if more must be read first.
fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, RespError> {
    let mut at = 0;
    Ok(frame_at(buf, &mut at, 0)?.map(|f| (f, at)))
}

fn frame_at(buf: &[u8], at: &mut usize, depth: usize) -> Result<Option<Frame>, RespError> {
    if depth > MAX_DEPTH {
        return Err(RespError::Protocol("arrays nested too deep"));
    }
    let Some(line) = line_at(buf, *at) else {
        return Ok(None);
    };
    let Some((&kind, text)) = buf[line.clone()].split_first() else {
        return Err(RespError::Protocol("an empty line"));
    };
    let text = std::str::from_utf8(text).map_err(|_| RespError::Protocol("a line not UTF-8"))?;
    let after_line = line.end + 2;
    let length = |max: usize| -> Result<Option<usize>, RespError> {
        let n: i64 = text
            .parse()
            .map_err(|_| RespError::Protocol("a bad length"))?;
        if n < 0 {
            return Ok(None);
        }
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= max)
            .map(Some)
            .ok_or(RespError::Protocol("a length over the limit"))
    };
    let frame = match kind {
        b'+' => Frame::Simple(text.to_string()),
        b'-' => Frame::Error(text.to_string()),
        b':' => Frame::Integer(
            text.parse()
                .map_err(|_| RespError::Protocol("a bad integer"))?,
        ),
        b'$' => match length(MAX_BULK)? {
            None => Frame::Nil,
            Some(n) => {
                let end = after_line + n;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(RespError::Protocol("a bulk string without its CRLF"));
                }
                *at = end + 2;
                return Ok(Some(Frame::Bulk(buf[after_line..end].to_vec())));
            }
        },
        b'*' => match length(MAX_ARRAY)? {
            None => Frame::Nil,
            Some(n) => {
                let mut cursor = after_line;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    match frame_at(buf, &mut cursor, depth + 1)? {
                        Some(f) => items.push(f),
                        None => return Ok(None),
                    }
                }
                *at = cursor;
                return Ok(Some(Frame::Array(items)));
            }
        },
        _ => return Err(RespError::Protocol("an unknown reply type")),
    };
    *at = after_line;
    Ok(Some(frame))
}

/// The line starting at `from`, without its CRLF, if it is complete.
fn line_at(buf: &[u8], from: usize) -> Option<Range<usize>> {
    let rest = buf.get(from..)?;
    let cr = rest.windows(2).position(|w| w == b"\r\n")?;
    Some(from..from + cr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> String {
        format!("${}\r\n{s}\r\n", s.len())
    }

    #[test]
    fn a_message_is_parsed_whole_and_only_when_whole() {
        let wire = format!("*3\r\n{}{}{}", bulk("message"), bulk("ch"), bulk("a\r\nb"));
        let bytes = wire.as_bytes();
        for cut in 0..bytes.len() {
            assert_eq!(
                parse(&bytes[..cut]).expect("valid so far"),
                None,
                "cut {cut}"
            );
        }
        let (frame, used) = parse(bytes).expect("valid").expect("whole");
        assert_eq!(used, bytes.len());
        assert_eq!(
            frame,
            Frame::Array(vec![
                Frame::Bulk(b"message".to_vec()),
                Frame::Bulk(b"ch".to_vec()),
                Frame::Bulk(b"a\r\nb".to_vec()),
            ])
        );
    }

    #[test]
    fn two_frames_in_one_read_are_taken_one_at_a_time() {
        let wire = format!("*3\r\n{}{}:1\r\n+OK\r\n", bulk("subscribe"), bulk("x"));
        let (first, used) = parse(wire.as_bytes()).expect("valid").expect("whole");
        assert!(matches!(first, Frame::Array(ref v) if v[2] == Frame::Integer(1)));
        let (second, _) = parse(&wire.as_bytes()[used..])
            .expect("valid")
            .expect("whole");
        assert_eq!(second, Frame::Simple("OK".into()));
    }

    #[test]
    fn garbage_is_an_error_not_a_wait() {
        for bad in [
            "?what\r\n",
            "$abc\r\n",
            "$3\r\nabcde\r\n",
            "$99999999999\r\n",
            "*99999\r\n",
            ":1.5\r\n",
            "\r\n",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2);
        assert!(parse(deep.as_bytes()).is_err(), "nesting is bounded");
        assert_eq!(
            parse(b"$-1\r\n").expect("nil").map(|(f, _)| f),
            Some(Frame::Nil)
        );
        assert_eq!(
            parse(b"-NOAUTH x\r\n").expect("error").map(|(f, _)| f),
            Some(Frame::Error("NOAUTH x".into()))
        );
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            command(&["SUBSCRIBE", "a", "bc"]),
            b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$2\r\nbc\r\n".to_vec()
        );
    }
}
