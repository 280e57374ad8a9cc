"""A trading consumer in Python (redis-py >= 4): read the current signal
safely, then follow the stream. Reads contract v3 (one snapshot per
strategy, binary records) and, while daemons migrate, v2: the newer wins.

    python3 docs/examples/signal_consumer.py redis://127.0.0.1:6379/0 mlcore fx_g10 EURUSD [FROM_ID [READS]]

The stream is followed from FROM_ID (default "$": from now on) for READS
blocking reads of up to 5 s (default 3).
"""
import struct
import sys
import time

import redis

# One signal of a v3 decision: weight, qty (f64), return_prob, risk_score
# (f32), little-endian: 24 bytes. The side is the weight's sign.
RECORD = struct.Struct("<ddff")


def side_of(weight: float) -> str:
    return "long" if weight > 0 else "short" if weight < 0 else "flat"


def decode_records(symbols: bytes, records: bytes) -> list:
    names = symbols.decode().split(",")
    if len(records) != RECORD.size * len(names):
        raise ValueError(f"{len(records)} bytes of records for {len(names)} symbols")
    return [
        {"symbol": name, "side": side_of(w), "weight": w, "qty": q, "return_prob": p, "risk_score": r}
        for name, (w, q, p, r) in zip(names, RECORD.iter_unpack(records))
    ]


def current(r: redis.Redis, ns: str, strategy: str, symbol: str):
    """The current signal, only while valid (compared with Redis time by the
    guard), the newer of v3's snapshot and v2's hash; None means: no valid
    signal, make no new trades."""
    newest = None
    for function, key, args in (
        ("mlcore_read_v3", f"{ns}:{{{strategy}}}:v3:snap", [symbol]),
        ("mlcore_read_v2", f"{ns}:{{{strategy}}}:sig:{symbol}", []),
    ):
        try:
            fields = r.fcall_ro(function, 1, key, *args)
        except redis.ResponseError as e:
            if "Function not found" in str(e):
                continue  # v2 removed after the migration
            raise
        if fields:
            sig = {k.decode(): v.decode() for k, v in zip(fields[::2], fields[1::2])}
            if newest is None or int(sig["seq"]) > int(newest["seq"]):
                newest = sig
    return newest


def main(url: str, ns: str, strategy: str, symbol: str, from_id: str = "$", reads: str = "3") -> None:
    r = redis.Redis.from_url(url)

    # 1. Is the strategy allowed to trade? Absent state means halted.
    ops = r.hgetall(f"{ns}:{{{strategy}}}:ops")
    print("mode:", ops.get(b"mode", b"halted").decode())

    # 2. The current signal.
    sig = current(r, ns, strategy, symbol)
    if sig is None:
        print(f"{symbol}: no valid signal")
    else:
        print(f"{symbol}: seq={sig['seq']} side={sig['side']} weight={sig['weight']} "
              f"valid_until_ms={sig['valid_until_ms']}")

    # 3. Follow contract v3's stream: one entry per decision, its symbols
    #    comma-separated and its signals as binary records.
    stream, last_id = f"{ns}:{{{strategy}}}:v3:signals", from_id
    for _ in range(int(reads)):
        for _key, entries in r.xread({stream: last_id}, block=5000) or []:
            for entry_id, e in entries:
                last_id = entry_id
                if int(e[b"valid_until_ms"]) <= time.time() * 1000:
                    continue  # never act on an expired decision
                for s in decode_records(e[b"symbols"], e[b"records"]):
                    print(entry_id.decode(), "seq", e[b"seq"].decode(), s["symbol"], s["side"], s["weight"])


if __name__ == "__main__":
    if len(sys.argv) < 5:
        sys.exit("usage: signal_consumer.py <redis-url> <namespace> <strategy> <symbol> [from-id [reads]]")
    main(*sys.argv[1:7])
