//! Reading Redis replies (RESP2) into reused buffers.
//!
//! The Redis client builds a `redis::Value` tree for every reply: for the
//! publisher that is an array and a string per decision, on a pinned
//! thread, thousands of times a second. [`ReplyReader`] instead reads the
//! socket into one buffer and indexes each reply as a flat list of
//! [`Frame`]s pointing into it; both buffers are reused, so once they have
//! grown to the largest reply a read allocates nothing. Callers look at the
//! frames for the replies they expect, and hand anything unusual (errors,
//! refusals) to `redis::parse_redis_value` by its bytes, so that the rare
//! paths read exactly as the Redis client would.

use std::io::{self, Read};
use std::ops::Range;

/// Largest bulk string or array accepted (Redis' own `proto-max-bulk-len`
/// default is 512 MiB; guard replies are a few bytes). A larger length is
/// a broken stream, not a reply.
const MAX_LEN: i64 = 512 * 1024 * 1024;
/// Deepest nesting accepted (guard replies nest 2 levels).
const MAX_DEPTH: usize = 16;
/// Bytes asked of the socket per read when the buffer is full.
const READ_CHUNK: usize = 16 * 1024;

/// What kind of element a [`Frame`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `+...`: the text is the payload.
    Simple,
    /// `-...`: an error; the text is the payload.
    Error,
    /// `:n`.
    Int,
    /// `$n`: the bytes are the payload.
    Bulk,
    /// `*n`: followed by its `len` elements.
    Array,
    /// `$-1` or `*-1`.
    Nil,
}

/// One element of a reply, in order (an array comes before its elements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its kind.
    pub kind: Kind,
    /// The integer (`Int`), or the element count (`Array`).
    pub int: i64,
    /// Its text or bytes in [`Reply::bytes`] (empty for `Int`, `Array`, `Nil`).
    pub payload: Range<usize>,
    /// The whole element in [`Reply::bytes`], nested elements included.
    pub span: Range<usize>,
    /// Index of the frame after this element and everything nested in it.
    pub next: usize,
}

/// A complete reply: its bytes and its frames (the first is the reply
/// itself). Valid until the next read.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a> {
    /// The reply's bytes as they came off the wire.
    pub bytes: &'a [u8],
    /// Its elements, depth first.
    pub frames: &'a [Frame],
}

impl<'a> Reply<'a> {
    /// Frame `i`.
    pub fn frame(&self, i: usize) -> Option<&'a Frame> {
        self.frames.get(i)
    }

    /// The payload of frame `i` (empty when it has none).
    pub fn payload(&self, i: usize) -> &'a [u8] {
        self.frames
            .get(i)
            .and_then(|f| self.bytes.get(f.payload.clone()))
            .unwrap_or_default()
    }

    /// The wire bytes of element `i`, nested elements included.
    pub fn span(&self, i: usize) -> &'a [u8] {
        self.frames
            .get(i)
            .and_then(|f| self.bytes.get(f.span.clone()))
            .unwrap_or_default()
    }

    /// Indexes of the elements of array frame `i`, in order.
    pub fn children(&self, i: usize) -> Children<'a> {
        let (left, first) = match self.frames.get(i) {
            Some(f) if f.kind == Kind::Array => (usize::try_from(f.int).unwrap_or(0), i + 1),
            _ => (0, i + 1),
        };
        Children {
            frames: self.frames,
            at: first,
            left,
        }
    }

    /// Element `i` as the Redis client would have returned it (allocates;
    /// for the paths that are not per decision). An error reply is
    /// `Value::ServerError`, as in a pipeline.
    pub fn value(&self, i: usize) -> redis::RedisResult<redis::Value> {
        redis::parse_redis_value(self.span(i))
    }
}

/// Iterator over an array's elements ([`Reply::children`]).
#[derive(Debug, Clone)]
pub struct Children<'a> {
    frames: &'a [Frame],
    at: usize,
    left: usize,
}

impl Iterator for Children<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.left == 0 {
            return None;
        }
        let i = self.at;
        let f = self.frames.get(i)?;
        self.left -= 1;
        self.at = f.next;
        Some(i)
    }
}

/// Reads replies from a byte stream into reused buffers.
#[derive(Debug, Default)]
pub struct ReplyReader {
    buf: Vec<u8>,
    /// Start of unread data in `buf`.
    start: usize,
    /// End of data in `buf`.
    end: usize,
    frames: Vec<Frame>,
    /// Bytes the last reply occupied (consumed on the next read).
    last: usize,
}

/// Why the bytes are not a reply.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed Redis reply at byte {at}: {what}")]
pub struct Malformed {
    /// Offset in the reply.
    pub at: usize,
    /// What was wrong.
    pub what: &'static str,
}

impl ReplyReader {
    /// Forgets anything buffered (after the stream broke).
    pub fn reset(&mut self) {
        self.start = 0;
        self.end = 0;
        self.last = 0;
        self.frames.clear();
    }

    /// Reads the next complete reply from `src`. Bytes past it stay
    /// buffered for the next call. A reply that arrives in pieces is parsed
    /// again from its start after each read: the replies read here are a
    /// few dozen bytes, for which that is cheaper than keeping parser state.
    pub fn read(&mut self, src: &mut impl Read) -> io::Result<Reply<'_>> {
        self.start += self.last;
        self.last = 0;
        loop {
            self.frames.clear();
            match parse(&self.buf[self.start..self.end], &mut self.frames) {
                Ok(Some(len)) => {
                    self.last = len;
                    let bytes = &self.buf[self.start..self.start + len];
                    return Ok(Reply {
                        bytes,
                        frames: &self.frames,
                    });
                }
                Ok(None) => self.fill(src)?,
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        }
    }

    /// Reads more bytes, moving unread data to the front and growing the
    /// buffer only when a reply does not fit.
    fn fill(&mut self, src: &mut impl Read) -> io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < READ_CHUNK / 2 {
            // Doubling keeps a large reply (a rare `HGETALL`) from being
            // copied over and over as it grows.
            let len = (self.end + READ_CHUNK).max(self.buf.len() * 2);
            self.buf.resize(len, 0);
        }
        loop {
            match src.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "Redis closed the connection",
                    ))
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Parses one reply at the start of `bytes` into `frames`: its length when
/// complete, `None` when more bytes are needed.
pub fn parse(bytes: &[u8], frames: &mut Vec<Frame>) -> Result<Option<usize>, Malformed> {
    element(bytes, 0, frames, 0)
}

/// Parses the element at `at`; returns where it ends.
fn element(
    bytes: &[u8],
    at: usize,
    frames: &mut Vec<Frame>,
    depth: usize,
) -> Result<Option<usize>, Malformed> {
    let bad = |what| Malformed { at, what };
    if depth > MAX_DEPTH {
        return Err(bad("nested too deep"));
    }
    let Some(line_end) = line(bytes, at + 1) else {
        return Ok(None);
    };
    let Some(&kind) = bytes.get(at) else {
        return Ok(None);
    };
    let text = at + 1..line_end;
    let after = line_end + 2;
    let idx = frames.len();
    let mut frame = Frame {
        kind: Kind::Nil,
        int: 0,
        payload: 0..0,
        span: at..after,
        next: idx + 1,
    };
    match kind {
        b'+' | b'-' => {
            frame.kind = if kind == b'+' { Kind::Simple } else { Kind::Error };
            frame.payload = text;
            frames.push(frame);
            Ok(Some(after))
        }
        b':' => {
            frame.kind = Kind::Int;
            frame.int = int(&bytes[text]).ok_or_else(|| bad("integer expected"))?;
            frames.push(frame);
            Ok(Some(after))
        }
        b'$' => {
            let len = int(&bytes[text]).ok_or_else(|| bad("bulk length expected"))?;
            if len == -1 {
                frames.push(frame);
                return Ok(Some(after));
            }
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l as i64 <= MAX_LEN)
                .ok_or_else(|| bad("bulk length out of range"))?;
            let end = after + len;
            if bytes.len() < end + 2 {
                return Ok(None);
            }
            if &bytes[end..end + 2] != b"\r\n" {
                return Err(bad("bulk string not followed by CRLF"));
            }
            frame.kind = Kind::Bulk;
            frame.payload = after..end;
            frame.span = at..end + 2;
            frames.push(frame);
            Ok(Some(end + 2))
        }
        b'*' => {
            let len = int(&bytes[text]).ok_or_else(|| bad("array length expected"))?;
            if len == -1 {
                frames.push(frame);
                return Ok(Some(after));
            }
            if !(0..=MAX_LEN).contains(&len) {
                return Err(bad("array length out of range"));
            }
            frame.kind = Kind::Array;
            frame.int = len;
            frames.push(frame);
            let mut pos = after;
            for _ in 0..len {
                match element(bytes, pos, frames, depth + 1)? {
                    Some(end) => pos = end,
                    None => return Ok(None),
                }
            }
            let next = frames.len();
            let f = &mut frames[idx];
            f.span = at..pos;
            f.next = next;
            Ok(Some(pos))
        }
        _ => Err(bad("unknown reply type")),
    }
}

/// Index of the `\r` ending the line that starts at `from`.
fn line(bytes: &[u8], from: usize) -> Option<usize> {
    let rest = bytes.get(from..)?;
    let i = rest.windows(2).position(|w| w == b"\r\n")?;
    Some(from + i)
}

fn int(text: &[u8]) -> Option<i64> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(bytes: &[u8]) -> (Option<usize>, Vec<Frame>) {
        let mut f = Vec::new();
        let n = parse(bytes, &mut f).unwrap();
        (n, f)
    }

    #[test]
    fn nested_arrays_index_their_elements() {
        let bytes = b"*3\r\n*2\r\n$2\r\nok\r\n:32\r\n$-1\r\n*2\r\n+stale\r\n:-7\r\nextra";
        let (n, f) = frames(bytes);
        assert_eq!(n, Some(bytes.len() - 5));
        let reply = Reply { bytes, frames: &f };
        let top: Vec<usize> = reply.children(0).collect();
        assert_eq!(top, [1, 4, 5]);
        assert_eq!(f[1].kind, Kind::Array);
        assert_eq!(reply.payload(2), b"ok");
        assert_eq!((f[3].kind, f[3].int), (Kind::Int, 32));
        assert_eq!(f[4].kind, Kind::Nil);
        assert_eq!(reply.children(5).map(|i| f[i].int).collect::<Vec<_>>(), [0, -7]);
        assert_eq!(reply.payload(6), b"stale");
        assert_eq!(reply.span(1), b"*2\r\n$2\r\nok\r\n:32\r\n");
        assert_eq!(f[0].next, f.len());
    }

    #[test]
    fn every_prefix_of_a_reply_asks_for_more() {
        let bytes = b"*2\r\n$5\r\nhe\r\nl\r\n-ERR Function not found\r\n";
        for cut in 0..bytes.len() {
            assert_eq!(frames(&bytes[..cut]).0, None, "prefix of {cut} bytes");
        }
        let (n, f) = frames(bytes);
        assert_eq!(n, Some(bytes.len()));
        let reply = Reply { bytes, frames: &f };
        assert_eq!(reply.payload(1), b"he\r\nl", "a bulk string may hold CRLF");
        assert_eq!(f[2].kind, Kind::Error);
    }

    #[test]
    fn broken_streams_are_refused_with_where() {
        let mut f = Vec::new();
        assert_eq!(
            parse(b"?x\r\n", &mut f),
            Err(Malformed {
                at: 0,
                what: "unknown reply type"
            })
        );
        assert!(parse(b"*1\r\n:x1\r\n", &mut f).is_err());
        assert!(parse(b"$3\r\nabcd\r\n", &mut f).is_err());
        assert!(parse(b"$99999999999\r\n", &mut f).is_err());
    }

    #[test]
    fn values_read_as_the_redis_client_reads_them() {
        let bytes = b"*2\r\n-BADINPUT seq is not a number\r\n*2\r\n$2\r\nok\r\n:3\r\n";
        let (_, f) = frames(bytes);
        let reply = Reply { bytes, frames: &f };
        let kids: Vec<usize> = reply.children(0).collect();
        match reply.value(kids[0]).unwrap() {
            redis::Value::ServerError(e) => assert_eq!(e.code(), "BADINPUT"),
            v => panic!("{v:?}"),
        }
        assert_eq!(
            reply.value(kids[1]).unwrap(),
            redis::Value::Array(vec![
                redis::Value::BulkString(b"ok".to_vec()),
                redis::Value::Int(3)
            ])
        );
    }

    /// Replies split across reads and several in one read come out whole
    /// and in order.
    #[test]
    fn the_reader_joins_and_splits_reads() {
        struct Trickle<'a>(&'a [u8], usize);
        impl Read for Trickle<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let n = self.1.min(self.0.len()).min(out.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut wire = Vec::new();
        for i in 0..50 {
            wire.extend_from_slice(format!("*2\r\n$2\r\nok\r\n:{i}\r\n").as_bytes());
        }
        for chunk in [1, 3, 7, 1000] {
            let mut src = Trickle(&wire, chunk);
            let mut r = ReplyReader::default();
            for i in 0..50 {
                let reply = r.read(&mut src).unwrap();
                assert_eq!(reply.frames[2].int, i);
            }
            assert_eq!(r.start + r.last, r.end, "nothing left buffered");
            let err = r.read(&mut src).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        }
    }
}
