//! Contract v3's publish call, judged exactly as `contract/src/guard_v3.lua`
//! judges it: the same checks in the same order, the same refusal texts, the
//! same verdicts. Pure: what Redis holds comes in as [`State`] and the
//! current weights, what is to be written goes out as the verdicts, so all
//! of it is tested without a server; `module.rs` does the reads and writes.
//!
//! One deliberate difference: a high-water mark is read only in the
//! canonical decimal the guard writes. Lua's `tonumber` also takes `" 5"`,
//! `"1e3"` or `"0x10"`; such a mark can only come from a hand edit, and the
//! module refuses it as "not a number" (fail closed) instead of guessing.

use crate::lua::number as lua_number;

/// Bytes of one signal record: weight f64, qty f64, return_prob f32,
/// risk_score f32, little-endian (`RECORD` in `guard_v3.lua`).
pub const RECORD: usize = 24;
/// The most signals one decision may carry.
pub const MAX_SIGNALS: usize = 1024;
/// The most decisions one call may carry.
pub const MAX_DECISIONS: u64 = 64;
/// Arguments before the decisions: strategy, symbols, stream_maxlen, count.
const HEAD: usize = 4;
/// Arguments per decision: seq, generated_at_ms, valid_until_ms, model_id,
/// model_version, records.
const PER: usize = 6;
/// The largest integer an argument may hold (Lua's numbers are doubles).
const MAX_INT: u64 = 1 << 53;

/// The five keys of one strategy, in the command's order.
#[derive(Debug, Clone, Copy)]
pub struct Keys<'a> {
    /// `{S}:ops`: the ops hash (mode).
    pub ops: &'a [u8],
    /// `{S}:v3:snap`: the newest accepted decision.
    pub snapshot: &'a [u8],
    /// `{S}:v3:seq`: the persistent high-water mark.
    pub seq: &'a [u8],
    /// `{S}:v3:signals`: the stream.
    pub stream: &'a [u8],
    /// `{S}:hwm`: v2's marks, taken over on the first v3 call.
    pub hwm: &'a [u8],
}

/// One decision of a call, checked.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    /// Its sequence number.
    pub seq: u64,
    /// When it stops being valid (ms, Redis' clock).
    pub valid_until_ms: u64,
    /// The arguments as sent, written as they came: seq, generated_at_ms,
    /// valid_until_ms, model_id, model_version, records.
    pub args: [&'a [u8]; PER],
}

impl Decision<'_> {
    /// The records argument.
    pub fn records(&self) -> &[u8] {
        self.args[5]
    }

    /// Signal `i`'s weight.
    pub fn weight(&self, i: usize) -> f64 {
        f64_at(self.records(), i * RECORD)
    }
}

/// A publish call whose every argument passed the checks.
#[derive(Debug)]
pub struct Request<'a> {
    /// Its keys.
    pub keys: Keys<'a>,
    /// The strategy.
    pub strategy: &'a [u8],
    /// The symbols as sent (comma-separated).
    pub list: &'a [u8],
    /// The symbols.
    pub symbols: Vec<&'a [u8]>,
    /// `XADD MAXLEN ~` of the stream, as sent.
    pub maxlen: &'a [u8],
    /// The decisions, in order.
    pub decisions: Vec<Decision<'a>>,
}

/// A strategy's mode, as the guard reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Everything goes.
    Active,
    /// Only decisions that shrink every weight toward zero, same sign.
    ReduceOnly,
    /// Nothing goes.
    Halted,
    /// Only all-flat decisions.
    Flatten,
}

impl Mode {
    /// The mode a stored value means: absent or unknown is `halted` (fail
    /// closed).
    pub fn of(stored: Option<&[u8]>) -> Self {
        match stored {
            Some(b"active") => Self::Active,
            Some(b"reduce_only") => Self::ReduceOnly,
            Some(b"flatten") => Self::Flatten,
            _ => Self::Halted,
        }
    }

    /// Its name in replies.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::ReduceOnly => "reduce_only",
            Self::Halted => "halted",
            Self::Flatten => "flatten",
        }
    }
}

/// What a call is judged against.
#[derive(Debug, Clone, Copy)]
pub struct State {
    /// Redis' clock, ms.
    pub now_ms: u64,
    /// The mode in force.
    pub mode: Mode,
    /// The high-water mark.
    pub hwm: u64,
}

/// What became of one decision (the reply shapes of `guard_v3.lua`).
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict<'a> {
    /// `{'ok', n}`: written.
    Accepted(usize),
    /// `{'expired', now_ms}`.
    Expired(u64),
    /// `{'stale', '', stored_seq}`.
    Stale(u64),
    /// `{'halted', mode, symbol}` (the symbol empty for `halted`).
    Halted(Mode, &'a [u8]),
}

/// A non-negative integer in canonical decimal, at most 2^53 (`int_arg`),
/// as Lua reads it: `tonumber` makes a double, so 2^53 + 1 reads as 2^53
/// and passes the check, and the value is the double's.
fn int_arg(s: Option<&[u8]>) -> Option<u64> {
    let s = s?;
    if s.is_empty() || s.len() > 16 || !s.iter().all(u8::is_ascii_digit) || (s.len() > 1 && s[0] == b'0') {
        return None;
    }
    let n = s.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')) as f64;
    (n <= MAX_INT as f64).then_some(n as u64)
}

/// A high-water mark as stored (see the module docs): digits only, read
/// as Lua reads a number (a double).
pub fn mark(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(s).ok()?.parse().ok()?;
    Some(n as f64 as u64)
}

fn text(s: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(s)
}

/// `tostring(x)` of an argument that may be absent.
fn shown(s: Option<&[u8]>) -> std::borrow::Cow<'_, str> {
    s.map_or("nil".into(), text)
}

/// The symbols of `list`, or why not (`symbols_of`).
pub fn symbols_of(list: Option<&[u8]>) -> Result<Vec<&[u8]>, String> {
    let list = match list {
        Some(l) if !l.is_empty() => l,
        _ => return Err("symbols are missing".into()),
    };
    let mut out: Vec<&[u8]> = Vec::with_capacity(32);
    for s in list.split(|&b| b == b',') {
        let allowed = |b: &u8| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'.' || *b == b'_';
        if s.is_empty() || s.len() > 16 || !s.iter().all(allowed) {
            // The Lua scan would have stopped at a repeat before this one.
            if let Some(r) = first_repeat(&out) {
                return Err(format!("symbol {} appears twice", text(out[r])));
            }
            return Err(format!(
                "symbol {} ({}) must be 1-16 characters of A-Z, 0-9, . or _",
                out.len() + 1,
                text(s)
            ));
        }
        out.push(s);
    }
    if let Some(r) = first_repeat(&out) {
        return Err(format!("symbol {} appears twice", text(out[r])));
    }
    if out.len() > MAX_SIGNALS {
        return Err(format!(
            "at most {MAX_SIGNALS} signals per decision, got {}",
            out.len()
        ));
    }
    Ok(out)
}

thread_local! {
    /// Symbol lists that passed [`symbols_of`], as sent: the daemon sends
    /// the same list every call, so a list is checked once and afterwards
    /// found by comparing its bytes (as `guard_v3.lua`'s `LISTS`). At most
    /// 64, then it starts over. Redis runs module commands on its main
    /// thread only: one cache.
    static CHECKED: std::cell::RefCell<Vec<Box<[u8]>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`symbols_of`], skipped for a list that passed it before.
pub fn symbols_cached(list: Option<&[u8]>) -> Result<Vec<&[u8]>, String> {
    if let Some(l) = list {
        if CHECKED.with_borrow(|known| known.iter().any(|k| **k == *l)) {
            return Ok(l.split(|&b| b == b',').collect());
        }
    }
    let out = symbols_of(list)?;
    if let Some(l) = list {
        CHECKED.with_borrow_mut(|known| {
            if known.len() >= 64 {
                known.clear();
            }
            known.push(l.into());
        });
    }
    Ok(out)
}

/// Where the first symbol that repeats an earlier one is, in list order.
///
/// The symbols are sorted as integers: each is at most 16 bytes of A-Z,
/// 0-9, `.`, `_` (never a zero byte), so zero-padded into a `u128` it is one
/// value per symbol (`docs/performance.md`, "Guard v3 as a module": a
/// compare of every pair cost a fifth of a call).
fn first_repeat(symbols: &[&[u8]]) -> Option<usize> {
    let mut packed: Vec<(u128, usize)> = symbols
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut b = [0u8; 16];
            b[..s.len()].copy_from_slice(s);
            (u128::from_le_bytes(b), i)
        })
        .collect();
    packed.sort_unstable();
    packed
        .windows(2)
        .filter(|w| w[0].0 == w[1].0)
        .map(|w| w[1].1)
        .min()
}

/// Why the keys are not `strategy`'s v3 keys, or nothing
/// (`keys_layout_check`).
fn keys_error(keys: &Keys<'_>, strategy: &[u8]) -> Option<String> {
    let mut tag = Vec::with_capacity(strategy.len() + 6);
    tag.push(b'{');
    tag.extend_from_slice(strategy);
    tag.extend_from_slice(b"}:ops");
    if !keys.ops.ends_with(&tag) {
        return Some(format!(
            "ops key {} is not strategy {}'s",
            text(keys.ops),
            text(strategy)
        ));
    }
    let base = &keys.ops[..keys.ops.len() - 4];
    let is = |key: &[u8], suffix: &[u8]| {
        key.len() == base.len() + suffix.len() && key.starts_with(base) && key.ends_with(suffix)
    };
    if !(is(keys.snapshot, b":v3:snap")
        && is(keys.seq, b":v3:seq")
        && is(keys.stream, b":v3:signals")
        && is(keys.hwm, b":hwm"))
    {
        return Some(format!(
            "snapshot/seq/stream/hwm keys do not match {}",
            text(base)
        ));
    }
    None
}

fn f64_at(b: &[u8], at: usize) -> f64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    f64::from_le_bytes(w)
}

fn f32_at(b: &[u8], at: usize) -> f64 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    f64::from(f32::from_le_bytes(w))
}

/// What is wrong with one record, or nothing (`value_error`).
fn value_error(r: &[u8]) -> Option<String> {
    let (w, q, p, risk) = (f64_at(r, 0), f64_at(r, 8), f32_at(r, 16), f32_at(r, 20));
    if !w.is_finite() {
        return Some("weight must be finite".into());
    }
    if !q.is_finite() {
        return Some("qty must be finite".into());
    }
    if !(0.0..=1.0).contains(&p) {
        return Some(format!("return_prob must be in [0, 1], got {}", lua_number(p)));
    }
    if !risk.is_finite() {
        return Some("risk_score must be finite".into());
    }
    None
}

/// Decision `d`'s header and records, checked (`header_error`, `records_of`).
/// `args` are all there: [`parse`] counted them first.
fn decision<'a>(args: [&'a [u8]; PER], d: usize, symbols: &[&[u8]]) -> Result<Decision<'a>, String> {
    let [seq, generated, valid, model_id, version, records] = args;
    let seq_n = match int_arg(Some(seq)) {
        Some(n) if n > 0 => n,
        _ => {
            return Err(format!(
                "decision {d}: seq must be a positive integer, got {}",
                text(seq)
            ))
        }
    };
    if int_arg(Some(generated)).is_none() {
        return Err(format!("decision {d}: generated_at_ms must be an integer"));
    }
    let Some(valid_until_ms) = int_arg(Some(valid)) else {
        return Err(format!("decision {d}: valid_until_ms must be an integer"));
    };
    if model_id.is_empty() {
        return Err(format!("decision {d}: model_id is missing"));
    }
    if int_arg(Some(version)).is_none() {
        return Err(format!("decision {d}: model_version must be an integer"));
    }
    let n = symbols.len();
    if records.len() != RECORD * n {
        return Err(format!(
            "decision {d}: records must be {} bytes for {n} symbols, got {}",
            RECORD * n,
            records.len()
        ));
    }
    for (i, r) in records.chunks_exact(RECORD).enumerate() {
        if let Some(why) = value_error(r) {
            return Err(format!(
                "decision {d}, signal {} ({}): {why}",
                i + 1,
                text(symbols[i])
            ));
        }
    }
    Ok(Decision {
        seq: seq_n,
        valid_until_ms,
        args,
    })
}

/// Checks a call's keys and arguments (everything after the keys) in
/// `publish`'s order; the request, or the refusal text (after `BADINPUT `).
pub fn parse<'a>(keys: Keys<'a>, args: &[&'a [u8]]) -> Result<Request<'a>, String> {
    let arg = |i: usize| args.get(i).copied();
    let strategy = match arg(0) {
        Some(s) if !s.is_empty() => s,
        _ => return Err("strategy is missing".into()),
    };
    if let Some(why) = keys_error(&keys, strategy) {
        return Err(why);
    }
    let symbols = symbols_cached(arg(1))?;
    let maxlen = match (arg(2), int_arg(arg(2))) {
        (Some(m), Some(n)) if n > 0 => m,
        _ => return Err("stream_maxlen must be a positive integer".into()),
    };
    let count = match int_arg(arg(3)) {
        Some(c) if (1..=MAX_DECISIONS).contains(&c) => c as usize,
        _ => return Err(format!("count must be 1-{MAX_DECISIONS}, got {}", shown(arg(3)))),
    };
    if args.len() != HEAD + PER * count {
        return Err(format!(
            "expected {count} decisions of {PER} fields, got {} fields",
            args.len() as i64 - HEAD as i64
        ));
    }
    let mut decisions = Vec::with_capacity(count);
    for (d, fields) in args[HEAD..].chunks_exact(PER).enumerate() {
        let fields: [&[u8]; PER] = [fields[0], fields[1], fields[2], fields[3], fields[4], fields[5]];
        decisions.push(decision(fields, d + 1, &symbols)?);
    }
    Ok(Request {
        keys,
        strategy,
        list: arg(1).unwrap_or_default(),
        symbols,
        maxlen,
        decisions,
    })
}

/// The weights `symbols` hold in the stored snapshot (its `valid_until_ms`,
/// `symbols` and `records` fields), 0 where none or when the snapshot is no
/// longer valid: what `reduce_only` compares with (`current_weights`). A
/// stored `valid_until_ms` that is not a number fails the call, as the
/// Lua's comparison with it does (nothing is written): `Err` says so.
pub fn current_weights(
    symbols: &[&[u8]],
    stored: [Option<&[u8]>; 3],
    now_ms: u64,
) -> Result<Vec<f64>, String> {
    let mut cur = vec![0.0; symbols.len()];
    let [Some(valid), list, records] = stored else {
        return Ok(cur);
    };
    match mark(valid) {
        None => return Err("the snapshot's valid_until_ms is not a number: nothing was written".into()),
        Some(v) if v <= now_ms => return Ok(cur),
        Some(_) => {}
    }
    let (Some(list), Some(records)) = (list, records) else {
        return Ok(cur);
    };
    let Ok(held) = symbols_cached(Some(list)) else {
        return Ok(cur);
    };
    if records.len() != RECORD * held.len() {
        return Ok(cur);
    }
    if held.as_slice() == symbols {
        // The usual case: the same list as the call's, weights in order.
        for (i, c) in cur.iter_mut().enumerate() {
            *c = f64_at(records, i * RECORD);
        }
        return Ok(cur);
    }
    let by_symbol: std::collections::HashMap<&[u8], f64> = held
        .iter()
        .enumerate()
        .map(|(i, h)| (*h, f64_at(records, i * RECORD)))
        .collect();
    for (c, s) in cur.iter_mut().zip(symbols) {
        *c = by_symbol.get(s).copied().unwrap_or(0.0);
    }
    Ok(cur)
}

/// Judges the decisions in order, as separate calls would be: the verdict
/// of each. `current` gives the stored weights, asked at most once (only
/// under `reduce_only`); its error fails the call.
pub fn judge<'a>(
    req: &Request<'a>,
    state: State,
    current: impl FnOnce() -> Result<Vec<f64>, String>,
) -> Result<Vec<Verdict<'a>>, String> {
    let n = req.symbols.len();
    let mut hwm = state.hwm;
    let mut current = Some(current);
    let mut cur: Option<Vec<f64>> = None;
    let mut out = Vec::with_capacity(req.decisions.len());
    for d in &req.decisions {
        let weights = (0..n).map(|i| d.weight(i));
        let verdict = if d.valid_until_ms <= state.now_ms {
            Verdict::Expired(state.now_ms)
        } else if d.seq <= hwm {
            Verdict::Stale(hwm)
        } else {
            match state.mode {
                Mode::Halted => Verdict::Halted(Mode::Halted, b""),
                Mode::Flatten => match weights.clone().position(|w| w != 0.0) {
                    Some(i) => Verdict::Halted(Mode::Flatten, req.symbols[i]),
                    None => Verdict::Accepted(n),
                },
                Mode::ReduceOnly => {
                    if cur.is_none() {
                        cur = Some(match current.take() {
                            Some(f) => f()?,
                            None => vec![0.0; n],
                        });
                    }
                    let Some(c) = cur.as_ref() else {
                        return Err("reduce_only: no current weights".into());
                    };
                    let grows =
                        |(w, c): (f64, f64)| w.abs() > c.abs() || (w != 0.0 && (w > 0.0) != (c > 0.0));
                    match weights.clone().zip(c.iter().copied()).position(grows) {
                        Some(i) => Verdict::Halted(Mode::ReduceOnly, req.symbols[i]),
                        None => Verdict::Accepted(n),
                    }
                }
                Mode::Active => Verdict::Accepted(n),
            }
        };
        if let Verdict::Accepted(_) = verdict {
            hwm = d.seq;
            if let Some(c) = cur.as_mut() {
                for (c, w) in c.iter_mut().zip(weights) {
                    *c = w;
                }
            }
        }
        out.push(verdict);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn record(w: f64, q: f64, p: f32, r: f32) -> Vec<u8> {
        let mut v = w.to_le_bytes().to_vec();
        v.extend_from_slice(&q.to_le_bytes());
        v.extend_from_slice(&p.to_le_bytes());
        v.extend_from_slice(&r.to_le_bytes());
        v
    }

    const KEYS: Keys<'static> = Keys {
        ops: b"ns:{S}:ops",
        snapshot: b"ns:{S}:v3:snap",
        seq: b"ns:{S}:v3:seq",
        stream: b"ns:{S}:v3:signals",
        hwm: b"ns:{S}:hwm",
    };

    fn call<'a>(records: &'a [&'a [u8]], symbols: &'a [u8], seqs: &[&'a [u8]]) -> Vec<&'a [u8]> {
        let count: &'static [u8] = [&b"1"[..], b"2", b"3"][seqs.len() - 1];
        let mut a: Vec<&[u8]> = vec![b"S", symbols, b"100", count];
        for (seq, r) in seqs.iter().zip(records) {
            a.extend_from_slice(&[seq, b"1000", b"99999999999", b"m1", b"7", r]);
        }
        a
    }

    proptest::proptest! {
        /// Whatever a client sends, the checks answer without panicking
        /// (a panic inside Redis takes Redis down): arbitrary arguments,
        /// and well-formed calls with arbitrary records and numbers.
        #[test]
        fn no_input_panics(
            args in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..40), 0..20),
            records in proptest::collection::vec(proptest::num::u8::ANY, 72),
            count in 0u8..4,
            mode in 0u8..4,
            hwm in proptest::num::u64::ANY,
        ) {
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let _ = parse(KEYS, &refs);
            let count_arg = count.to_string();
            let mut call: Vec<&[u8]> = vec![b"S", b"A,B,C", b"10", count_arg.as_bytes()];
            for _ in 0..count {
                call.extend_from_slice(&[b"5", b"1", b"99999", b"m", b"1", &records]);
            }
            if let Ok(req) = parse(KEYS, &call) {
                let mode = [Mode::Active, Mode::ReduceOnly, Mode::Halted, Mode::Flatten][usize::from(mode)];
                let state = State { now_ms: 1000, mode, hwm };
                let verdicts = judge(&req, state, || Ok(vec![0.0; 3])).unwrap();
                proptest::prop_assert_eq!(verdicts.len(), usize::from(count));
                let stored = [Some(&b"5000"[..]), Some(&b"A,B,C"[..]), Some(records.as_slice())];
                let _ = current_weights(&req.symbols, stored, 1000);
            }
        }
    }

    #[test]
    fn integers_are_canonical_and_at_most_two_to_the_53() {
        assert_eq!(int_arg(Some(b"9007199254740992")), Some(1 << 53));
        // As Lua's tonumber: 2^53 + 1 is the double 2^53, and passes.
        assert_eq!(int_arg(Some(b"9007199254740993")), Some(1 << 53));
        for bad in [
            &b""[..],
            b"01",
            b"-1",
            b"1.0",
            b" 1",
            b"9007199254740995",
            b"12345678901234567",
        ] {
            assert_eq!(int_arg(Some(bad)), None, "{bad:?}");
        }
        assert_eq!(mark(b"0012"), Some(12));
        assert_eq!(mark(b"1e3"), None);
    }

    #[test]
    fn symbols_are_checked_as_the_lua_checks_them() {
        assert_eq!(
            symbols_of(Some(b"EURUSD,BRK.B")).unwrap(),
            [&b"EURUSD"[..], b"BRK.B"]
        );
        assert_eq!(symbols_of(Some(b"")).unwrap_err(), "symbols are missing");
        assert_eq!(
            symbols_of(Some(b"A,B,")).unwrap_err(),
            "symbol 3 () must be 1-16 characters of A-Z, 0-9, . or _"
        );
        assert_eq!(symbols_of(Some(b"A,B,A")).unwrap_err(), "symbol A appears twice");
        // The first repeat in list order, before a later bad symbol.
        assert_eq!(
            symbols_of(Some(b"B,A,A,B,x")).unwrap_err(),
            "symbol A appears twice"
        );
        assert_eq!(
            symbols_of(Some(b"A,x,A")).unwrap_err(),
            "symbol 2 (x) must be 1-16 characters of A-Z, 0-9, . or _"
        );
        assert_eq!(symbols_of(Some(b"AB,A,ABC,A.B")).unwrap().len(), 4);
        // Checked once, then found as sent; a refused list is never kept.
        for _ in 0..2 {
            assert_eq!(symbols_cached(Some(b"AB,A")).unwrap(), [&b"AB"[..], b"A"]);
            assert!(symbols_cached(Some(b"AB,A,AB")).is_err());
        }
        for i in 0..70 {
            let l = format!("S{i},T{i}");
            assert_eq!(symbols_cached(Some(l.as_bytes())).unwrap().len(), 2);
        }
        assert!(CHECKED.with_borrow(|k| k.len()) <= 64);
        let many: Vec<String> = (0..1025).map(|i| format!("S{i}")).collect();
        assert_eq!(
            symbols_of(Some(many.join(",").as_bytes())).unwrap_err(),
            "at most 1024 signals per decision, got 1025"
        );
    }

    #[test]
    fn refusals_name_the_decision_the_signal_and_the_field() {
        let good = record(0.5, 10.0, 0.5, 0.1);
        let nan_p = record(0.5, 10.0, 1.5, 0.1);
        let recs: [&[u8]; 2] = [&good, &nan_p];
        let both = [good.clone(), nan_p.clone()].concat();
        let e = parse(KEYS, &call(&[&both, &both], b"A,B", &[b"1", b"2"])).unwrap_err();
        assert_eq!(
            e,
            "decision 1, signal 2 (B): return_prob must be in [0, 1], got 1.5"
        );
        let e = parse(KEYS, &call(&recs, b"A", &[b"1", b"0"])).unwrap_err();
        assert_eq!(e, "decision 2: seq must be a positive integer, got 0");
        let mut other = KEYS;
        other.hwm = b"ns:{T}:hwm";
        let e = parse(other, &call(&recs, b"A", &[b"1"])).unwrap_err();
        assert_eq!(e, "snapshot/seq/stream/hwm keys do not match ns:{S}");
        let e = parse(KEYS, &[b"S", b"A", b"100", b"2", b"1"]).unwrap_err();
        assert_eq!(e, "expected 2 decisions of 6 fields, got 1 fields");
        let e = parse(KEYS, &[b"S", b"A", b"100"]).unwrap_err();
        assert_eq!(e, "count must be 1-64, got nil");
    }

    #[test]
    fn verdicts_follow_order_expiry_and_modes() {
        let none = || -> Result<Vec<f64>, String> { Err("not asked for".into()) };
        let long = record(0.5, 10.0, 0.5, 0.1);
        let flat = record(0.0, 0.0, 0.5, 0.1);
        let short = record(-0.5, -10.0, 0.5, 0.1);
        let recs: [&[u8]; 3] = [&flat, &long, &flat];
        let args = call(&recs, b"A", &[b"5", b"6", b"7"]);
        let req = parse(KEYS, &args).unwrap();
        let state = |mode, hwm| State {
            now_ms: 1000,
            mode,
            hwm,
        };
        assert_eq!(
            judge(&req, state(Mode::Active, 5), none).unwrap(),
            [Verdict::Stale(5), Verdict::Accepted(1), Verdict::Accepted(1)]
        );
        assert_eq!(
            judge(&req, state(Mode::Flatten, 0), none).unwrap(),
            [
                Verdict::Accepted(1),
                Verdict::Halted(Mode::Flatten, b"A"),
                Verdict::Accepted(1)
            ]
        );
        // reduce_only from 0.6: 0 shrinks, 0.5 grows back from the 0 just accepted.
        assert_eq!(
            judge(&req, state(Mode::ReduceOnly, 0), || Ok(vec![0.6])).unwrap(),
            [
                Verdict::Accepted(1),
                Verdict::Halted(Mode::ReduceOnly, b"A"),
                Verdict::Accepted(1)
            ]
        );
        assert_eq!(
            judge(
                &req,
                State {
                    now_ms: 99_999_999_999,
                    mode: Mode::Active,
                    hwm: 0
                },
                none
            )
            .unwrap()[0],
            Verdict::Expired(99_999_999_999)
        );
        let shorts: [&[u8]; 1] = [&short];
        let args = call(&shorts, b"A", &[b"8"]);
        let req = parse(KEYS, &args).unwrap();
        assert_eq!(
            judge(&req, state(Mode::Flatten, 0), none).unwrap(),
            [Verdict::Halted(Mode::Flatten, b"A")],
            "a short is not flat either"
        );
        assert_eq!(
            judge(&req, state(Mode::ReduceOnly, 0), || Ok(vec![-0.25])).unwrap(),
            [Verdict::Halted(Mode::ReduceOnly, b"A")],
            "grows short"
        );
        assert_eq!(
            judge(&req, state(Mode::ReduceOnly, 0), || Ok(vec![-0.75])).unwrap(),
            [Verdict::Accepted(1)],
            "shrinks short"
        );
        assert_eq!(Mode::of(Some(b"sideways")), Mode::Halted);
        assert_eq!(Mode::of(None), Mode::Halted);
    }

    #[test]
    fn current_weights_are_zero_unless_the_snapshot_is_valid_and_whole() {
        let recs = [record(0.5, 1.0, 0.5, 0.1), record(-0.25, 1.0, 0.5, 0.1)].concat();
        let symbols: [&[u8]; 3] = [b"B", b"C", b"A"];
        let stored = |v: &'static [u8], r| [Some(v), Some(&b"A,B"[..]), Some(r)];
        let w = |symbols: &[&[u8]], stored| current_weights(symbols, stored, 1000).unwrap();
        assert_eq!(w(&symbols, stored(b"2000", &recs)), [-0.25, 0.0, 0.5]);
        let same: [&[u8]; 2] = [b"A", b"B"];
        assert_eq!(w(&same, stored(b"2000", &recs)), [0.5, -0.25]);
        assert_eq!(w(&symbols, stored(b"1000", &recs)), [0.0; 3]);
        assert_eq!(w(&symbols, stored(b"2000", &recs[..30])), [0.0; 3]);
        assert_eq!(w(&symbols, [None, None, None]), [0.0; 3]);
        assert!(
            current_weights(&symbols, stored(b"soon", &recs), 1000).is_err(),
            "fails as the Lua's comparison does"
        );
    }
}
