//! The Redis side: the module's entry point, its two commands, and the
//! reads and writes of a publish call through `RedisModule_Call`.
//!
//! The API is reached the way `redismodule.h`'s `RedisModule_Init` reaches
//! it: the first word of the load context is `RedisModule_GetApi`, which
//! hands out each function by name. Only the 15 functions used here are
//! asked for, so a Redis older than one of them refuses to load the module
//! instead of crashing later; the signatures are copied from Redis 7.0's
//! `redismodule.h`. (The `redis-module` crate wraps the whole API through
//! bindgen and a C shim; this needs 15 functions and no C.)
//!
//! Every read and write goes through `RedisModule_Call` with flag `C`, so a
//! Redis user needs the same data commands through the module as through
//! the Lua function (and ACLs keep meaning what they meant), and the writes
//! with `!`, so replicas and the AOF receive the commands' effects (the
//! stream entry's ID as written, wrapped with the rest in `MULTI`/`EXEC`)
//! and never re-run the checks against their own clock.

#![allow(unsafe_code)] // the C ABI of Redis modules; each block says why it holds

use std::ffi::{c_char, c_int, c_long, c_longlong, c_void, CStr};
use std::sync::OnceLock;

use crate::publish::{self, Keys, Mode, Request, State, Verdict};

/// The name `MODULE LIST` shows.
const NAME: &CStr = c"mlcore_guard";
/// The contract version the module implements (`guard_v3.lua`'s).
pub const CONTRACT: i64 = 3;
/// Its revision: the Lua library's revision this module matches.
pub const REVISION: i64 = 1;
/// The module's version in `MODULE LIST`: contract × 100 + revision.
const MODULE_VERSION: c_int = (CONTRACT * 100 + REVISION) as c_int;

const OK: c_int = 0;
const ERR: c_int = 1;
const APIVER_1: c_int = 1;

const REPLY_STRING: c_int = 0;
const REPLY_ERROR: c_int = 1;
const REPLY_ARRAY: c_int = 3;
const REPLY_NULL: c_int = 4;

/// Redis' opaque types.
#[repr(C)]
pub struct RedisModuleCtx {
    _opaque: [u8; 0],
}
/// A Redis string.
#[repr(C)]
pub struct RedisModuleString {
    _opaque: [u8; 0],
}
/// A reply to `RedisModule_Call`.
#[repr(C)]
pub struct RedisModuleCallReply {
    _opaque: [u8; 0],
}

type Ctx = *mut RedisModuleCtx;
type Str = *mut RedisModuleString;
type Reply = *mut RedisModuleCallReply;
type CmdFunc = unsafe extern "C" fn(Ctx, *mut Str, c_int) -> c_int;
type GetApi = unsafe extern "C" fn(*const c_char, *mut c_void) -> c_int;

macro_rules! api {
    ($($field:ident: $name:literal => $ty:ty,)*) => {
        /// The module API functions this module uses.
        struct Api { $($field: $ty,)* }

        impl Api {
            /// Asks `get` for each function; the first one missing, if any.
            ///
            /// # Safety
            /// `get` is Redis' `RedisModule_GetApi`.
            unsafe fn load(get: GetApi) -> Result<Self, &'static CStr> {
                // SAFETY: each name is given the type redismodule.h declares for it.
                unsafe { Ok(Self { $($field: function::<$ty>(get, $name)?,)* }) }
            }
        }
    };
}

api! {
    set_module_attribs: c"RedisModule_SetModuleAttribs" => unsafe extern "C" fn(Ctx, *const c_char, c_int, c_int),
    create_command: c"RedisModule_CreateCommand" => unsafe extern "C" fn(Ctx, *const c_char, Option<CmdFunc>, *const c_char, c_int, c_int, c_int) -> c_int,
    auto_memory: c"RedisModule_AutoMemory" => unsafe extern "C" fn(Ctx),
    wrong_arity: c"RedisModule_WrongArity" => unsafe extern "C" fn(Ctx) -> c_int,
    string_ptr_len: c"RedisModule_StringPtrLen" => unsafe extern "C" fn(*const RedisModuleString, *mut usize) -> *const c_char,
    create_string: c"RedisModule_CreateString" => unsafe extern "C" fn(Ctx, *const c_char, usize) -> Str,
    reply_with_error: c"RedisModule_ReplyWithError" => unsafe extern "C" fn(Ctx, *const c_char) -> c_int,
    reply_with_array: c"RedisModule_ReplyWithArray" => unsafe extern "C" fn(Ctx, c_long) -> c_int,
    reply_with_string_buffer: c"RedisModule_ReplyWithStringBuffer" => unsafe extern "C" fn(Ctx, *const c_char, usize) -> c_int,
    reply_with_long_long: c"RedisModule_ReplyWithLongLong" => unsafe extern "C" fn(Ctx, c_longlong) -> c_int,
    call: c"RedisModule_Call" => unsafe extern "C" fn(Ctx, *const c_char, *const c_char, ...) -> Reply,
    call_reply_type: c"RedisModule_CallReplyType" => unsafe extern "C" fn(Reply) -> c_int,
    call_reply_length: c"RedisModule_CallReplyLength" => unsafe extern "C" fn(Reply) -> usize,
    call_reply_array_element: c"RedisModule_CallReplyArrayElement" => unsafe extern "C" fn(Reply, usize) -> Reply,
    call_reply_string_ptr: c"RedisModule_CallReplyStringPtr" => unsafe extern "C" fn(Reply, *mut usize) -> *const c_char,
}

/// Function `name` from `get`, as an `F`.
///
/// # Safety
/// `get` is `RedisModule_GetApi` and `F` the function pointer type Redis
/// declares for `name`.
unsafe fn function<F: Copy>(get: GetApi, name: &'static CStr) -> Result<F, &'static CStr> {
    const { assert!(size_of::<F>() == size_of::<*mut c_void>()) };
    let mut p: *mut c_void = std::ptr::null_mut();
    // SAFETY: GetApi writes one function pointer through its second argument.
    let status = unsafe { get(name.as_ptr(), (&raw mut p).cast()) };
    if status != OK || p.is_null() {
        return Err(name);
    }
    // SAFETY: a non-null pointer to a function of type F (the caller's promise).
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
}

/// Strings the calls reuse, made once at load (not tracked by any context).
struct Words {
    mode: Str,
    maxlen: Str,
    tilde: Str,
    star: Str,
    plus: Str,
    minus: Str,
    count: Str,
    one: Str,
    valid_until_ms: Str,
    symbols: Str,
    records: Str,
    /// The stream entry's and snapshot's field names, in `guard_v3.lua`'s order.
    strategy: Str,
    seq: Str,
    model_id: Str,
    model_version: Str,
    generated_at_ms: Str,
    written_at_us: Str,
}

struct Module {
    api: Api,
    words: Words,
}

// SAFETY: Redis runs module commands on its main thread only (or under its
// GIL): the strings in `Words` are never freed, and the only change to them
// after load — `RedisModule_Call` raising and dropping their reference
// counts, which is not atomic — happens there. The API functions are plain
// function pointers.
unsafe impl Send for Module {}
// SAFETY: as above.
unsafe impl Sync for Module {}

static MODULE: OnceLock<Module> = OnceLock::new();

/// Redis calls this on `MODULE LOAD` / `--loadmodule`.
///
/// # Safety
/// Called by Redis with a valid load context.
#[no_mangle]
pub unsafe extern "C" fn RedisModule_OnLoad(ctx: Ctx, _argv: *mut Str, _argc: c_int) -> c_int {
    // SAFETY: the first word of a module context is RedisModule_GetApi
    // (redismodule.h, RedisModule_Init).
    let get = unsafe { *(ctx as *const *const c_void) };
    if get.is_null() {
        return ERR;
    }
    // SAFETY: that word is a function of GetApi's type.
    let get: GetApi = unsafe { std::mem::transmute::<*const c_void, GetApi>(get) };
    // SAFETY: `get` is GetApi.
    let Ok(api) = (unsafe { Api::load(get) }) else {
        return ERR;
    };
    // SAFETY: a load context and a NUL-terminated name.
    unsafe { (api.set_module_attribs)(ctx, NAME.as_ptr(), MODULE_VERSION, APIVER_1) };
    let word = |s: &CStr| {
        // SAFETY: a NULL context makes a string no context frees.
        unsafe { (api.create_string)(std::ptr::null_mut(), s.as_ptr(), s.count_bytes()) }
    };
    let words = Words {
        mode: word(c"mode"),
        maxlen: word(c"MAXLEN"),
        tilde: word(c"~"),
        star: word(c"*"),
        plus: word(c"+"),
        minus: word(c"-"),
        count: word(c"COUNT"),
        one: word(c"1"),
        valid_until_ms: word(c"valid_until_ms"),
        symbols: word(c"symbols"),
        records: word(c"records"),
        strategy: word(c"strategy"),
        seq: word(c"seq"),
        model_id: word(c"model_id"),
        model_version: word(c"model_version"),
        generated_at_ms: word(c"generated_at_ms"),
        written_at_us: word(c"written_at_us"),
    };
    let module = MODULE.get_or_init(|| Module { api, words });
    let commands: [(&CStr, CmdFunc, &CStr, c_int, c_int); 2] = [
        (PUBLISH, publish_command, c"write deny-oom", 1, 5),
        (INFO, info_command, c"readonly fast", 0, 0),
    ];
    for (name, f, flags, first, last) in commands {
        // SAFETY: a load context, NUL-terminated strings, a command function.
        let status = unsafe {
            (module.api.create_command)(
                ctx,
                name.as_ptr(),
                Some(f),
                flags.as_ptr(),
                first,
                last,
                i32::from(first > 0),
            )
        };
        if status != OK {
            return ERR;
        }
    }
    OK
}

/// The publish command: `guard_v3.lua`'s `mlcore_publish_v3`, with its five
/// keys first and no key count (`docs/redis-contract.md`).
pub const PUBLISH: &CStr = c"mlcore.publish_v3";
/// The version command: `{'mlcore_guard_module', 3, revision}`.
pub const INFO: &CStr = c"mlcore.guard_info";

/// A command's context and arguments, with what the module made at load.
struct Call<'a> {
    m: &'a Module,
    ctx: Ctx,
    argv: &'a [Str],
}

/// What a `RedisModule_Call` came back with (valid until the command ends:
/// the context frees replies then).
#[derive(Clone, Copy)]
enum Got<'a> {
    Str(&'a [u8]),
    Null,
    Array(Reply, usize),
    Error(&'a [u8]),
    /// Refused before it ran (`errno`: ACL, unknown command).
    Refused,
    Other,
}

impl<'a> Call<'a> {
    fn bytes(&self, s: Str) -> &'a [u8] {
        let mut len = 0usize;
        // SAFETY: a string of this command (argv, or made in this context),
        // alive until it returns.
        unsafe {
            let p = (self.m.api.string_ptr_len)(s, &raw mut len);
            if p.is_null() {
                return &[];
            }
            std::slice::from_raw_parts(p.cast::<u8>(), len)
        }
    }

    fn key(&self, i: usize) -> Str {
        self.argv[1 + i]
    }

    /// Decision `d`'s argument `j` (`Decision::args`' order).
    fn decision_arg(&self, d: usize, j: usize) -> Str {
        self.argv[1 + 5 + 4 + d * 6 + j]
    }

    fn string(&self, s: &[u8]) -> Str {
        // SAFETY: the command's context (freed with it: auto memory is on).
        unsafe { (self.m.api.create_string)(self.ctx, s.as_ptr().cast(), s.len()) }
    }

    /// Runs `cmd` with `args`; `flags` are `RedisModule_Call`'s (`C`: as the
    /// caller's user, `!`: replicated).
    fn run(&self, cmd: &CStr, flags: &CStr, args: &[Str]) -> Got<'a> {
        // SAFETY: `v` takes an array of strings and its length; each is a
        // live string of this command or of the module.
        let r =
            unsafe { (self.m.api.call)(self.ctx, cmd.as_ptr(), flags.as_ptr(), args.as_ptr(), args.len()) };
        self.got(r)
    }

    fn got(&self, r: Reply) -> Got<'a> {
        if r.is_null() {
            return Got::Refused;
        }
        let api = &self.m.api;
        // SAFETY: a reply of this command's context, alive until it returns.
        unsafe {
            match (api.call_reply_type)(r) {
                t @ (REPLY_STRING | REPLY_ERROR) => {
                    let mut len = 0usize;
                    let p = (api.call_reply_string_ptr)(r, &raw mut len);
                    let s = if p.is_null() {
                        &[][..]
                    } else {
                        std::slice::from_raw_parts(p.cast::<u8>(), len)
                    };
                    if t == REPLY_STRING {
                        Got::Str(s)
                    } else {
                        Got::Error(s)
                    }
                }
                REPLY_NULL => Got::Null,
                REPLY_ARRAY => Got::Array(r, (api.call_reply_length)(r)),
                _ => Got::Other,
            }
        }
    }

    fn element(&self, array: Reply, i: usize) -> Got<'a> {
        // SAFETY: an array reply of this context; Redis checks the index.
        self.got(unsafe { (self.m.api.call_reply_array_element)(array, i) })
    }

    fn reply_str(&self, s: &[u8]) {
        // SAFETY: a command context and a buffer of `s.len()` bytes.
        unsafe { (self.m.api.reply_with_string_buffer)(self.ctx, s.as_ptr().cast(), s.len()) };
    }

    fn reply_int(&self, n: u64) {
        // SAFETY: a command context.
        unsafe { (self.m.api.reply_with_long_long)(self.ctx, n as c_longlong) };
    }

    fn reply_array(&self, n: usize) {
        // SAFETY: a command context.
        unsafe { (self.m.api.reply_with_array)(self.ctx, n as c_long) };
    }

    /// An error reply, `text` as is (`ReplyWithError` adds the `-`), cut at
    /// a NUL as Redis cuts a Lua error reply.
    fn reply_error(&self, text: &str) -> c_int {
        let text = text.split('\0').next().unwrap_or_default();
        let c = std::ffi::CString::new(text).unwrap_or_default();
        // SAFETY: a command context and a NUL-terminated string.
        unsafe { (self.m.api.reply_with_error)(self.ctx, c.as_ptr()) };
        OK
    }

    fn reply_verdict(&self, v: &Verdict<'_>) {
        match v {
            Verdict::Accepted(n) => {
                self.reply_array(2);
                self.reply_str(b"ok");
                self.reply_int(*n as u64);
            }
            Verdict::Expired(now) => {
                self.reply_array(2);
                self.reply_str(b"expired");
                self.reply_int(*now);
            }
            Verdict::Stale(hwm) => {
                self.reply_array(3);
                self.reply_str(b"stale");
                self.reply_str(b"");
                self.reply_int(*hwm);
            }
            Verdict::Halted(mode, symbol) => {
                self.reply_array(3);
                self.reply_str(b"halted");
                self.reply_str(mode.as_str().as_bytes());
                self.reply_str(symbol);
            }
        }
    }
}

/// Redis' clock in µs: the module runs inside the server, so this is the
/// clock `TIME` reads.
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn wrong_type(key: &[u8], want: &str) -> String {
    format!(
        "key {} does not hold a {want}: nothing was written",
        String::from_utf8_lossy(key)
    )
}

fn garbled(key: &[u8]) -> String {
    format!(
        "key {} holds a high-water mark that is not a number: nothing was written",
        String::from_utf8_lossy(key)
    )
}

const STREAM_ID_END: &[u8] = b"18446744073709551615-";

/// The state the call is judged against, read as `read_state` reads it:
/// each read proves its key's type before anything is written.
/// Also Redis' clock in µs, the stream entry's `written_at_us`.
fn read_state(c: &Call<'_>, req: &Request<'_>) -> Result<(State, u64), String> {
    let w = &c.m.words;
    let keys = &req.keys;
    let now_us = now_us();
    let now_ms = now_us / 1000;
    let mode = match c.run(c"HGET", c"Cv", &[c.key(0), w.mode]) {
        Got::Str(m) => Mode::of(Some(m)),
        Got::Null => Mode::Halted,
        _ => return Err(wrong_type(keys.ops, "hash")),
    };
    let hwm = match c.run(c"GET", c"Cv", &[c.key(2)]) {
        Got::Str(m) => publish::mark(m).ok_or_else(|| garbled(keys.seq))?,
        Got::Null => {
            // The first v3 call takes over the highest of v2's marks.
            let Got::Array(marks, n) = c.run(c"HVALS", c"Cv", &[c.key(4)]) else {
                return Err(wrong_type(keys.hwm, "hash"));
            };
            let mut hwm = 0;
            for i in 0..n {
                let Got::Str(m) = c.element(marks, i) else {
                    return Err(garbled(keys.hwm));
                };
                hwm = hwm.max(publish::mark(m).ok_or_else(|| garbled(keys.hwm))?);
            }
            hwm
        }
        _ => return Err(wrong_type(keys.seq, "string")),
    };
    match c.run(c"TYPE", c"Cv", &[c.key(1)]) {
        Got::Str(b"hash" | b"none") => {}
        _ => return Err(wrong_type(keys.snapshot, "hash")),
    }
    if req.decisions.len() > 1 {
        let Got::Array(top, n) = c.run(c"XREVRANGE", c"Cv", &[c.key(3), w.plus, w.minus, w.count, w.one])
        else {
            return Err(wrong_type(keys.stream, "stream"));
        };
        if n > 0 {
            if let Got::Array(entry, _) = c.element(top, 0) {
                if let Got::Str(id) = c.element(entry, 0) {
                    if id.starts_with(STREAM_ID_END) {
                        return Err(format!(
                            "stream {} has no stream IDs left after {}: nothing was written",
                            String::from_utf8_lossy(keys.stream),
                            String::from_utf8_lossy(id)
                        ));
                    }
                }
            }
        }
    }
    Ok((State { now_ms, mode, hwm }, now_us))
}

/// The weights the snapshot holds for the call's symbols (`reduce_only`);
/// a read that fails fails the call, as the Lua's `redis.call` does.
fn current_weights(c: &Call<'_>, req: &Request<'_>, now_ms: u64) -> Result<Vec<f64>, String> {
    let w = &c.m.words;
    let got = c.run(
        c"HMGET",
        c"Cv",
        &[c.key(1), w.valid_until_ms, w.symbols, w.records],
    );
    let Got::Array(h, 3) = got else {
        return Err(failure(c"HMGET", got)
            .unwrap_or_else(|| "ERR HMGET of the snapshot did not answer 3 values".into()));
    };
    let mut stored = [None; 3];
    for (i, s) in stored.iter_mut().enumerate() {
        if let Got::Str(v) = c.element(h, i) {
            *s = Some(v);
        }
    }
    publish::current_weights(&req.symbols, stored, now_ms)
        .map_err(|e| format!("BADINPUT key {}: {e}", String::from_utf8_lossy(req.keys.snapshot)))
}

/// Why a call failed, as Redis said it: its error reply, or, for a call
/// Redis refused to run (`RedisModule_Call` gives no reply then, only
/// `errno`), what Redis would have said to a client.
fn failure(cmd: &CStr, got: Got<'_>) -> Option<String> {
    match got {
        Got::Error(e) => Some(String::from_utf8_lossy(e).into_owned()),
        Got::Refused => {
            let e = std::io::Error::last_os_error();
            let name = cmd.to_string_lossy().to_ascii_lowercase();
            Some(match e.kind() {
                std::io::ErrorKind::PermissionDenied => {
                    format!("NOPERM this user has no permissions to run the '{name}' command or to access its keys")
                }
                _ => format!("ERR Redis refused to run '{name}' ({e})"),
            })
        }
        _ => None,
    }
}

/// Writes the accepted decisions (their indices): a stream entry each,
/// then the snapshot, its expiry and the mark for the last. The error reply
/// when a write fails.
fn write(c: &Call<'_>, req: &Request<'_>, accepted: &[usize], now_us: u64) -> Result<(), String> {
    let w = &c.m.words;
    let written = c.string(now_us.to_string().as_bytes());
    for (k, &d) in accepted.iter().enumerate() {
        let a = |j| c.decision_arg(d, j);
        let args = [
            c.key(3),
            w.maxlen,
            w.tilde,
            c.argv[1 + 5 + 2],
            w.star,
            w.strategy,
            c.argv[1 + 5],
            w.seq,
            a(0),
            w.model_id,
            a(3),
            w.model_version,
            a(4),
            w.generated_at_ms,
            a(1),
            w.valid_until_ms,
            a(2),
            w.symbols,
            c.argv[1 + 5 + 1],
            w.records,
            a(5),
            w.written_at_us,
            written,
        ];
        if let Some(e) = failure(c"XADD", c.run(c"XADD", c"C!v", &args)) {
            if k == 0 {
                return Err(format!(
                    "BADINPUT stream {}: {e}: nothing was written",
                    String::from_utf8_lossy(req.keys.stream)
                ));
            }
            return Err(e);
        }
    }
    let Some(&d) = accepted.last() else { return Ok(()) };
    let a = |j| c.decision_arg(d, j);
    let snapshot = [
        c.key(1),
        w.seq,
        a(0),
        w.generated_at_ms,
        a(1),
        w.valid_until_ms,
        a(2),
        w.model_id,
        a(3),
        w.model_version,
        a(4),
        w.symbols,
        c.argv[1 + 5 + 1],
        w.records,
        a(5),
    ];
    for (cmd, args) in [
        (c"HSET", &snapshot[..]),
        (c"PEXPIREAT", &[c.key(1), a(2)][..]),
        (c"SET", &[c.key(2), a(0)][..]),
    ] {
        if let Some(e) = failure(cmd, c.run(cmd, c"C!v", args)) {
            return Err(e);
        }
    }
    Ok(())
}

/// `mlcore.publish_v3 ops snap seq stream hwm strategy symbols maxlen count
/// (seq generated_at_ms valid_until_ms model_id model_version records)…`
unsafe extern "C" fn publish_command(ctx: Ctx, argv: *mut Str, argc: c_int) -> c_int {
    // Set before the commands were registered: without it there is no API
    // to reply with.
    let Some(m) = MODULE.get() else { return ERR };
    // SAFETY: Redis passes `argc` strings that live until the command returns.
    let argv = unsafe { std::slice::from_raw_parts(argv, usize::try_from(argc).unwrap_or(0)) };
    if argv.len() < 6 {
        // SAFETY: a command context.
        return unsafe { (m.api.wrong_arity)(ctx) };
    }
    // SAFETY: a command context: replies, strings made in it are freed when it returns.
    unsafe { (m.api.auto_memory)(ctx) };
    let c = Call { m, ctx, argv };
    let bytes: Vec<&[u8]> = argv.iter().map(|&s| c.bytes(s)).collect();
    let keys = Keys {
        ops: bytes[1],
        snapshot: bytes[2],
        seq: bytes[3],
        stream: bytes[4],
        hwm: bytes[5],
    };
    let req = match publish::parse(keys, &bytes[6..]) {
        Ok(r) => r,
        Err(why) => return c.reply_error(&format!("BADINPUT {why}")),
    };
    let (state, now_us) = match read_state(&c, &req) {
        Ok(s) => s,
        Err(why) => return c.reply_error(&format!("BADINPUT {why}")),
    };
    let verdicts = match publish::judge(&req, state, || current_weights(&c, &req, state.now_ms)) {
        Ok(v) => v,
        Err(e) => return c.reply_error(&e),
    };
    let accepted: Vec<usize> = verdicts
        .iter()
        .enumerate()
        .filter_map(|(d, v)| matches!(v, Verdict::Accepted(_)).then_some(d))
        .collect();
    if let Err(e) = write(&c, &req, &accepted, now_us) {
        return c.reply_error(&e);
    }
    if let [one] = verdicts.as_slice() {
        c.reply_verdict(one);
    } else {
        c.reply_array(verdicts.len());
        for v in &verdicts {
            c.reply_verdict(v);
        }
    }
    OK
}

/// `mlcore.guard_info`: `{'mlcore_guard_module', 3, revision}`.
unsafe extern "C" fn info_command(ctx: Ctx, argv: *mut Str, argc: c_int) -> c_int {
    let Some(m) = MODULE.get() else { return ERR };
    let c = Call { m, ctx, argv: &[] };
    let _ = argv;
    if argc != 1 {
        // SAFETY: a command context.
        return unsafe { (m.api.wrong_arity)(ctx) };
    }
    c.reply_array(3);
    c.reply_str(b"mlcore_guard_module");
    c.reply_int(CONTRACT as u64);
    c.reply_int(REVISION as u64);
    OK
}
