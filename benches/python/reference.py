"""The Python reference stack: the daemon's job done the usual Python way,
to measure how far ahead the Rust daemon is (`mlcore-reference-bench`
runs this and the daemon's own decision path in alternating pairs).

Per decision, one after another: a real 32-symbol feature matrix (from a
pool the bench writes, the same the Rust side cycles through), the
artifact's three ONNX heads through onnxruntime (one intra-op thread, as
the daemon's sessions), the θ gate and a sizing rule in numpy, and the
publish through the same Redis guard (FCALL with redis-py, contract v2 or
v3). The Python side is given its features (the daemon computes them from
quotes) and a simpler portfolio (no β neutrality or lot rounding): both
flatter Python, so the ratios are lower bounds.

    python benches/python/reference.py --artifact DIR --features FILE \
        --redis URL --ns NS --strategy S --contract v3 --decisions 2000 --seq 1

Prints one JSON object: decisions, seconds, per-decision p50/p99 in µs.
"""
import argparse
import json
import struct
import time

import numpy as np
import onnxruntime as ort
import redis

SYMBOLS = 32


def session(path: str) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def decide(p1: np.ndarray, p2: np.ndarray, theta1: float, theta2: float):
    """Sides and weights: long above θ1, short below 1 − θ1, flat when the
    risk score is above θ2; weights from the edge, gross at most 1."""
    edge = np.where(p1 > theta1, p1 - 0.5, np.where(p1 < 1.0 - theta1, p1 - 0.5, 0.0))
    edge = np.where(p2 > theta2, 0.0, edge)
    gross = np.abs(edge).sum()
    weights = edge / gross if gross > 1.0 else edge
    qty = np.round(weights * 1e6 / 1000.0) * 1000.0
    return weights.astype(np.float64), qty.astype(np.float64)


def main() -> None:
    a = argparse.ArgumentParser()
    a.add_argument("--artifact", required=True)
    a.add_argument("--features", required=True)
    a.add_argument("--redis", required=True)
    a.add_argument("--ns", required=True)
    a.add_argument("--strategy", required=True)
    a.add_argument("--contract", choices=["v2", "v3"], default="v3")
    a.add_argument("--decisions", type=int, default=2000)
    a.add_argument("--seq", type=int, default=1)
    a.add_argument("--n-features", type=int, required=True)
    args = a.parse_args()

    manifest = json.load(open(f"{args.artifact}/manifest.json"))
    theta1, theta2 = manifest["theta"]["theta1"], manifest["theta"]["theta2"]
    heads = [session(f"{args.artifact}/{manifest['heads'][h]['file']}") for h in ("ai1", "ai2", "ai3")
             if h in manifest["heads"]]
    pool = np.fromfile(args.features, dtype="<f4").reshape(-1, SYMBOLS, args.n_features)
    r = redis.Redis.from_url(args.redis)
    symbols = [f"SYM{i:02d}" for i in range(SYMBOLS)]
    base = f"{args.ns}:{{{args.strategy}}}"
    keys_v2 = [f"{base}:ops", f"{base}:hwm", f"{base}:signals"] + [f"{base}:sig:{s}" for s in symbols]
    keys_v3 = [f"{base}:ops", f"{base}:v3:snap", f"{base}:v3:seq", f"{base}:v3:signals", f"{base}:hwm"]
    record = struct.Struct("<ddff")

    times = []
    started = time.perf_counter()
    for k in range(args.decisions):
        t0 = time.perf_counter()
        x = pool[k % len(pool)]
        p1, p2, *_ = (h.run(None, {"x": x})[0][:, 0] for h in heads)
        weights, qty = decide(p1, p2, theta1, theta2)
        now = int(time.time() * 1000)
        seq = args.seq + k
        if args.contract == "v3":
            records = b"".join(
                record.pack(w, q, p, rs) for w, q, p, rs in zip(weights, qty, p1.tolist(), p2.tolist())
            )
            reply = r.fcall("mlcore_publish_v3", len(keys_v3), *keys_v3, args.strategy, ",".join(symbols),
                            1000, 1, seq, now, now + 60_000, "reference", 1, records)
        else:
            argv = [seq, now, now + 60_000, 1000, "reference", 1, args.strategy]
            for s, w, q, p, rs in zip(symbols, weights, qty, p1.tolist(), p2.tolist()):
                side = "long" if w > 0 else "short" if w < 0 else "flat"
                argv += [s, side, repr(float(w)), repr(float(q)), repr(float(p)), repr(float(rs))]
            reply = r.fcall("mlcore_publish_v2", len(keys_v2), *keys_v2, *argv)
        if reply[0] != b"ok":
            raise SystemExit(f"decision {k}: the guard replied {reply}")
        times.append(time.perf_counter() - t0)
    seconds = time.perf_counter() - started
    us = np.array(times) * 1e6
    print(json.dumps({
        "decisions": args.decisions,
        "seconds": seconds,
        "p50_us": float(np.percentile(us, 50)),
        "p99_us": float(np.percentile(us, 99)),
    }))


if __name__ == "__main__":
    main()
