"""A trading consumer in Python (redis-py >= 4): read the current signal
safely, then follow the stream.

    python3 docs/examples/signal_consumer.py redis://127.0.0.1:6379/0 mlcore fx_g10 EURUSD
"""
import json
import sys
import time

import redis


def main(url: str, ns: str, strategy: str, symbol: str) -> None:
    r = redis.Redis.from_url(url, decode_responses=True)

    # 1. Is the strategy allowed to trade? Absent state means halted.
    ops = r.hgetall(f"{ns}:{{{strategy}}}:ops")
    print("mode:", ops.get("mode", "halted"))

    # 2. The current signal, only while valid (compared with Redis time by the
    #    guard). None means: no valid signal, make no new trades.
    fields = r.fcall_ro("mlcore_read_v2", 1, f"{ns}:{{{strategy}}}:sig:{symbol}")
    if fields is None:
        print(f"{symbol}: no valid signal")
    else:
        sig = dict(zip(fields[::2], fields[1::2]))
        print(f"{symbol}: seq={sig['seq']} side={sig['side']} weight={sig['weight']} "
              f"valid_until_ms={sig['valid_until_ms']}")

    # 3. Follow the stream from now on: one entry per decision, its signals
    #    as a JSON array.
    stream, last_id = f"{ns}:{{{strategy}}}:signals", "$"
    for _ in range(3):
        for _key, entries in r.xread({stream: last_id}, block=5000) or []:
            for entry_id, e in entries:
                last_id = entry_id
                if int(e["valid_until_ms"]) <= time.time() * 1000:
                    continue  # never act on an expired decision
                for s in json.loads(e["signals"]):
                    print(entry_id, "seq", e["seq"], s["symbol"], s["side"], s["weight"])


if __name__ == "__main__":
    main(*sys.argv[1:5])
