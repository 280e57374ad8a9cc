"""LightGBM on the feature matrix and splits our learners train on: the
reference `mlcore-learner-bench` prints beside its own figures.

Usage: lightgbm_reference.py DIR
DIR holds what the benchmark wrote: `x.f32` (row-major float32 features),
`ai1.u8` / `ai2.u8` (labels, one byte per row), `w.f64` (the sample
weights, each label's average uniqueness) and `split.json` ({"rows", "features", "train": [a, b],
"valid": [a, b], "test": [a, b]}: row ranges). Prints one JSON object:
per head, test AUC, test log loss, trees and training seconds.

Single-threaded and seeded (`deterministic`), like our learner, so the
times compare like with like; early stopping on the validation rows.
"""

import json
import sys
import time

import lightgbm as lgb
import numpy as np
from scipy.stats import rankdata


def auc(scores, labels):
    """Mann-Whitney AUC with ties counted half."""
    ranks = rankdata(scores)
    pos = labels.astype(bool)
    n_pos, n_neg = pos.sum(), (~pos).sum()
    if n_pos == 0 or n_neg == 0:
        return 0.5
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(probs, labels):
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def main(folder):
    split = json.load(open(f"{folder}/split.json"))
    rows, features = split["rows"], split["features"]
    x = np.fromfile(f"{folder}/x.f32", dtype="<f4").reshape(rows, features)
    weights = np.fromfile(f"{folder}/w.f64", dtype="<f8")
    tr, va, te = (slice(*split[k]) for k in ("train", "valid", "test"))
    out = {"lightgbm": lgb.__version__}
    for head in ("ai1", "ai2"):
        y = np.fromfile(f"{folder}/{head}.u8", dtype="u1").astype(np.float64)
        w = weights[tr]
        params = {
            "objective": "binary",
            "learning_rate": 0.05,
            "num_leaves": 31,
            "min_data_in_leaf": 50,
            "num_threads": 1,
            "deterministic": True,
            "force_row_wise": True,
            "seed": 0,
            "verbosity": -1,
        }
        started = time.perf_counter()
        booster = lgb.train(
            params,
            lgb.Dataset(x[tr], y[tr], weight=w),
            num_boost_round=1000,
            valid_sets=[lgb.Dataset(x[va], y[va])],
            callbacks=[lgb.early_stopping(50, verbose=False)],
        )
        seconds = time.perf_counter() - started
        p = booster.predict(x[te], num_iteration=booster.best_iteration)
        out[head] = {
            "auc": auc(p, y[te]),
            "log_loss": log_loss(p, y[te]),
            "trees": booster.best_iteration,
            "train_seconds": seconds,
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
