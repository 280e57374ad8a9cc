//! The market-data wire protocol (see `docs/wire-protocol.md`).
//!
//! Every frame is `len: u32 LE` (bytes after this field) + `kind: u8` + body,
//! little-endian, fixed size per kind:
//!
//! | kind | frame | body |
//! |---|---|---|
//! | 1 | quote | `ts_ns: i64, symbol_id: u32, bid: f64, ask: f64, bid_size: f64, ask_size: f64` (44 bytes) |
//! | 2 | decision trigger | `ts_ns: i64, strategy: u16` (index in `universe.yaml`) (10 bytes) |
//! | 3 | heartbeat | `ts_ns: i64` (8 bytes) |
//!
//! Decoding reads from a byte slice with no allocation. Anything else is an
//! error that closes the connection: unknown kind, a length that does not
//! match the kind, a frame longer than the configured maximum, non-finite or
//! crossed prices.

/// Bytes of the length prefix.
pub const LEN_BYTES: usize = 4;
const QUOTE_BODY: usize = 44;
const TRIGGER_BODY: usize = 10;
const HEARTBEAT_BODY: usize = 8;

/// A decoded frame. `Copy`: it never owns heap memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Frame {
    /// A top-of-book quote.
    Quote {
        /// Feed time, ns since the epoch.
        ts_ns: i64,
        /// Wire symbol id (`universe.yaml` `id`).
        symbol_id: u32,
        /// Best bid.
        bid: f64,
        /// Best ask.
        ask: f64,
        /// Bid size.
        bid_size: f64,
        /// Ask size.
        ask_size: f64,
    },
    /// Decide now for a strategy.
    Trigger {
        /// Decision time, ns since the epoch.
        ts_ns: i64,
        /// Strategy index in `universe.yaml`.
        strategy: u16,
    },
    /// Keep-alive.
    Heartbeat {
        /// Sender time, ns since the epoch.
        ts_ns: i64,
    },
}

/// Why a frame was refused. Small and `Copy`: counted per reason on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireError {
    /// The kind byte is not 1, 2 or 3.
    UnknownKind,
    /// The length does not match the kind.
    BadLength,
    /// The frame is longer than the configured maximum.
    TooLarge,
    /// A price or size is NaN or infinite, or the quote is crossed.
    BadValue,
}

impl WireError {
    /// Every reason, for metrics.
    pub const ALL: [WireError; 4] = [Self::UnknownKind, Self::BadLength, Self::TooLarge, Self::BadValue];

    /// Label for metrics and logs.
    pub const fn label(self) -> &'static str {
        match self {
            Self::UnknownKind => "unknown_kind",
            Self::BadLength => "bad_length",
            Self::TooLarge => "too_large",
            Self::BadValue => "bad_value",
        }
    }

    /// Index into per-reason counters.
    pub const fn index(self) -> usize {
        match self {
            Self::UnknownKind => 0,
            Self::BadLength => 1,
            Self::TooLarge => 2,
            Self::BadValue => 3,
        }
    }
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_le_bytes(a)
}

fn f64_at(b: &[u8], at: usize) -> f64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    f64::from_le_bytes(a)
}

/// Decodes one frame from the front of `buf`. `Ok(None)`: need more bytes.
/// `Ok(Some((frame, consumed)))`: a frame and how many bytes it took.
pub fn decode(buf: &[u8], max_frame: usize) -> Result<Option<(Frame, usize)>, WireError> {
    if buf.len() < LEN_BYTES {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max_frame {
        return Err(WireError::TooLarge);
    }
    if len == 0 {
        return Err(WireError::BadLength);
    }
    // The kind is known as soon as its byte arrives: refuse early.
    if let Some(&kind) = buf.get(LEN_BYTES) {
        let body = match kind {
            1 => QUOTE_BODY,
            2 => TRIGGER_BODY,
            3 => HEARTBEAT_BODY,
            _ => return Err(WireError::UnknownKind),
        };
        if len != 1 + body {
            return Err(WireError::BadLength);
        }
    }
    if buf.len() < LEN_BYTES + len {
        return Ok(None);
    }
    let b = &buf[LEN_BYTES + 1..LEN_BYTES + len];
    let frame = match buf[LEN_BYTES] {
        1 => {
            let (bid, ask, bid_size, ask_size) = (f64_at(b, 12), f64_at(b, 20), f64_at(b, 28), f64_at(b, 36));
            let finite = [bid, ask, bid_size, ask_size].iter().all(|v| v.is_finite());
            if !finite || bid <= 0.0 || ask < bid || bid_size < 0.0 || ask_size < 0.0 {
                return Err(WireError::BadValue);
            }
            Frame::Quote {
                ts_ns: i64_at(b, 0),
                symbol_id: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
                bid,
                ask,
                bid_size,
                ask_size,
            }
        }
        2 => Frame::Trigger {
            ts_ns: i64_at(b, 0),
            strategy: u16::from_le_bytes([b[8], b[9]]),
        },
        _ => Frame::Heartbeat { ts_ns: i64_at(b, 0) },
    };
    Ok(Some((frame, LEN_BYTES + len)))
}

impl Frame {
    /// A quote frame for `q` under its wire `symbol_id`, stamped `ts_ns`.
    pub fn quote(q: &mlcore_market::Quote, symbol_id: u32, ts_ns: i64) -> Self {
        Frame::Quote {
            ts_ns,
            symbol_id,
            bid: q.bid,
            ask: q.ask,
            bid_size: q.bid_size,
            ask_size: q.ask_size,
        }
    }
}

/// Appends the encoding of `frame` to `out` (used by the feed and tests).
pub fn encode(frame: &Frame, out: &mut Vec<u8>) {
    match *frame {
        Frame::Quote {
            ts_ns,
            symbol_id,
            bid,
            ask,
            bid_size,
            ask_size,
        } => {
            out.extend_from_slice(&(1 + QUOTE_BODY as u32).to_le_bytes());
            out.push(1);
            out.extend_from_slice(&ts_ns.to_le_bytes());
            out.extend_from_slice(&symbol_id.to_le_bytes());
            for v in [bid, ask, bid_size, ask_size] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        Frame::Trigger { ts_ns, strategy } => {
            out.extend_from_slice(&(1 + TRIGGER_BODY as u32).to_le_bytes());
            out.push(2);
            out.extend_from_slice(&ts_ns.to_le_bytes());
            out.extend_from_slice(&strategy.to_le_bytes());
        }
        Frame::Heartbeat { ts_ns } => {
            out.extend_from_slice(&(1 + HEARTBEAT_BODY as u32).to_le_bytes());
            out.push(3);
            out.extend_from_slice(&ts_ns.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn quote(ts: i64) -> Frame {
        Frame::Quote {
            ts_ns: ts,
            symbol_id: 7,
            bid: 1.1,
            ask: 1.1002,
            bid_size: 1e6,
            ask_size: 2e6,
        }
    }

    #[test]
    fn frames_round_trip_and_partial_input_waits() {
        let mut buf = Vec::new();
        for f in [
            quote(5),
            Frame::Trigger {
                ts_ns: 9,
                strategy: 1,
            },
            Frame::Heartbeat { ts_ns: 3 },
        ] {
            buf.clear();
            encode(&f, &mut buf);
            for cut in 0..buf.len() {
                assert_eq!(decode(&buf[..cut], 4096), Ok(None), "{f:?} cut at {cut}");
            }
            assert_eq!(decode(&buf, 4096), Ok(Some((f, buf.len()))));
        }
    }

    #[test]
    fn malformed_frames_are_refused_with_a_reason() {
        let mut buf = Vec::new();
        encode(&quote(1), &mut buf);
        let mut bad_kind = buf.clone();
        bad_kind[4] = 9;
        assert_eq!(decode(&bad_kind, 4096), Err(WireError::UnknownKind));
        let mut bad_len = buf.clone();
        bad_len[0] = 20;
        assert_eq!(decode(&bad_len, 4096), Err(WireError::BadLength));
        assert_eq!(decode(&buf, 16), Err(WireError::TooLarge));
        let mut crossed = Vec::new();
        encode(
            &Frame::Quote {
                ts_ns: 1,
                symbol_id: 1,
                bid: 1.2,
                ask: 1.1,
                bid_size: 1.0,
                ask_size: 1.0,
            },
            &mut crossed,
        );
        assert_eq!(decode(&crossed, 4096), Err(WireError::BadValue));
        let mut nan = Vec::new();
        encode(
            &Frame::Quote {
                ts_ns: 1,
                symbol_id: 1,
                bid: f64::NAN,
                ask: 1.1,
                bid_size: 1.0,
                ask_size: 1.0,
            },
            &mut nan,
        );
        assert_eq!(decode(&nan, 4096), Err(WireError::BadValue));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics_and_never_overreads(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(Some((_, used))) = decode(&bytes, 4096) {
                prop_assert!(used <= bytes.len());
            }
        }

        #[test]
        fn any_valid_quote_round_trips(ts in any::<i64>(), id in any::<u32>(), bid in 0.0001f64..1e6, spread in 0.0f64..10.0, s in 0.0f64..1e9) {
            let f = Frame::Quote { ts_ns: ts, symbol_id: id, bid, ask: bid + spread, bid_size: s, ask_size: s };
            let mut buf = Vec::new();
            encode(&f, &mut buf);
            prop_assert_eq!(decode(&buf, 4096), Ok(Some((f, buf.len()))));
        }
    }
}
