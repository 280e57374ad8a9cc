#!/usr/bin/env bash
# The product's main job on one machine: fetch ONNX Runtime, make sure Redis
# and PostgreSQL answer, build, validate the dev configuration, generate the
# synthetic market, start the control plane, retrain the strategy as a flow
# (train, search θ, backtest with stress, challenge the active model, sign,
# register; its report under .run/runs/), activate the model with two
# principals, start the daemon
# (it loads what the registry activated), resume the strategy through the
# API (two principals again), replay the market through mlcore-feed, and show
# the signals arriving in Redis and the latency percentiles; then change θ
# for the strategy through a config change request (proposed, two
# approvals, merged, applied) and show the running daemon's signals follow
# it, and roll it back (fast path: one approval).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

bash scripts/setup-ort.sh
# CMake, clang: LightGBM is built from source (the research crate's learner).
eval "$(bash scripts/setup-build-tools.sh)"
eval "$(bash scripts/services.sh)"

say "building release binaries into $CARGO_TARGET_DIR"
cargo build --release --locked -p mlcore-daemon -p mlcore-feed -p mlcore-control
BIN="$CARGO_TARGET_DIR/release"
CONTROL="$BIN/mlcore-control"

say "mlcore-control config check --env dev"
"$CONTROL" config check --env dev --quiet

# The planted effect's strength is part of the market: a dataset of an
# older generator is not reused.
DATA="$RUN_DIR/datasets/synth-seed7-effect1"
if [ -f "$DATA/dataset_index.json" ]; then
  say "synthetic market already at $DATA"
else
  say "generating the synthetic market (32 symbols, 3 days, 5 s quotes) into $DATA"
  "$CONTROL" data synth --seed 7 --symbols 32 --days 3 --out "$DATA"
fi

say "mlcore-control db migrate --env dev"
"$CONTROL" db migrate --env dev
# The processes read a deployed copy of the configuration, which config
# change requests write (docs/config-changes.md). Fresh each run, from
# configs/: the repository .run/config-repo and the folder .run/live/configs.
rm -rf "$RUN_DIR/config-repo" "$RUN_DIR/live"
say "mlcore-control config init --env dev: the config repository (git) and the deployed folder"
"$CONTROL" config init --env dev
LIVE="$RUN_DIR/live/configs"
export MLCORE_PROJECT_ROOT="$ROOT"
say "starting mlcore-control serve on the deployed configuration (log: $RUN_DIR/control.log)"
"$CONTROL" --config-dir "$LIVE" serve --env dev > "$RUN_DIR/control.out" 2> "$RUN_DIR/control.log" &
CONTROL_PID=$!
trap 'kill $CONTROL_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q listening "$RUN_DIR/control.out" 2>/dev/null && break; sleep 0.1; done
grep -q listening "$RUN_DIR/control.out" || die "control plane did not start; see $RUN_DIR/control.log"
read -r _ API < "$RUN_DIR/control.out"
export MLCORE_CONTROL_URL="http://${API#http=}"
# The dev principals' well-known tokens (docs/config.md); never outside dev.
as_operator() { MLCORE_TOKEN=dev-operator-token "$CONTROL" "$@"; }
as_approver() { MLCORE_TOKEN=dev-approver-token "$CONTROL" "$@"; }
as_admin() { MLCORE_TOKEN=dev-admin-token "$CONTROL" "$@"; }
request_id() { sed -n 's/^ *"id": "\(ops-[^"]*\)".*/\1/p' | head -1; }

say "retraining fx_g10 as a flow (docs/retraining.md): dataset gate, features, labels, purged k-fold validation, LightGBM heads ai1 ai2 ai3, ONNX export with parity, θ search on the first half of the held-out window, backtest with stress scenarios on the half it never saw, champion/challenger against the active model, signing with the dev key, registration; each step content-addressed and reused when its inputs did not change"
set +e
"$CONTROL" retrain --env dev --strategy fx_g10 > "$RUN_DIR/retrain.out"
RETRAIN=$?
set -e
cat "$RUN_DIR/retrain.out"
case $RETRAIN in
  0) MODEL=$(sed -n 's/^succeeded: \(fx_g10-v[0-9]*\) .*/\1/p' "$RUN_DIR/retrain.out")
     [ -n "$MODEL" ] || die "retrain succeeded without naming its model; see $RUN_DIR/retrain.out"
     say "activating $MODEL: operator asks, approver approves"
     REQ=$(as_operator models activate --id "$MODEL" --reason "demo run" | request_id)
     as_approver ops approve --id "$REQ" >/dev/null
     say "$MODEL is active in the registry; the pointer is in Redis" ;;
  10) say "the candidate did not beat the active model on the same unseen window: nothing was signed, the active model stays" ;;
  *) die "retraining failed (exit $RETRAIN); see $RUN_DIR/retrain.out" ;;
esac
REPORT=$(sed -n 's/^report: //p' "$RUN_DIR/retrain.out")
say "the run's report (self-contained HTML; plots also as PNG beside it): $REPORT"
say "the ledger of every run: $RUN_DIR/runs/index.csv"
tail -n 3 "$RUN_DIR/runs/index.csv" | cut -c1-200

say "starting mlcore-daemon on the deployed configuration (log: $RUN_DIR/daemon.log)"
"$BIN/mlcore-daemon" --config-dir "$LIVE" --project-root "$ROOT" run --env dev > "$RUN_DIR/daemon.out" 2> "$RUN_DIR/daemon.log" &
DAEMON=$!
trap 'kill $DAEMON $CONTROL_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q listening "$RUN_DIR/daemon.out" 2>/dev/null && break; sleep 0.1; done
read -r _ INGRESS HTTP < "$RUN_DIR/daemon.out"
INGRESS="${INGRESS#ingress=}"; HTTP="${HTTP#http=}"
for _ in $(seq 100); do curl -fs "http://$HTTP/readyz" >/dev/null && break; sleep 0.2; done
curl -fs "http://$HTTP/readyz" >/dev/null || die "daemon not ready; see $RUN_DIR/daemon.log"
say "daemon ready: ingress $INGRESS, metrics http://$HTTP/metrics"

say "resuming fx_g10 through the API (absent ops state means halted): operator asks, approver approves"
REQ=$(as_operator ops request --action resume --scope fx_g10 --reason "demo run" | request_id)
as_approver ops approve --id "$REQ" >/dev/null

say "replaying the market for 15 s at 120x, a decision every 100 ms"
"$BIN/mlcore-feed" --env dev --dataset "$DATA" --addr "$INGRESS" --speed 120 --trigger-every-ms 100 --seconds 15

NS=mlcore
say "what the daemon published in its last 100 decisions: non-flat signals and β-neutrality"
redis-cli -u "$MLCORE_REDIS_URL" --json XREVRANGE "${NS}:{fx_g10}:signals" + - COUNT 100 | python3 -c '
import json, sys
entries = json.load(sys.stdin)
books = [json.loads(dict(zip(f[::2], f[1::2]))["signals"]) for _, f in entries]
signals = [s for b in books for s in b]
held = [s for s in signals if s["side"] != "flat"]
books_held = sum(1 for b in books if any(s["side"] != "flat" for s in b))
share = 100 * len(held) / max(len(signals), 1)
print(f"  {len(books)} decisions: {len(held)} of {len(signals)} signals not flat ({share:.1f} %), {books_held} decisions with a position")
# β-neutrality of what was published, with universe.yaml'"'"'s static betas
# (a book holding a rolling-β symbol is left out: its β is estimated live).
import re
beta = {m[0]: float(m[1]) for m in re.findall(r"symbol: (\w+),.*?source: static, value: (-?[0-9.]+)", open("configs/base/universe.yaml").read())}
residual = [abs(sum(s["weight"] * beta[s["symbol"]] for s in b if s["side"] != "flat")) for b in books
            if all(s["symbol"] in beta or s["side"] == "flat" for s in b)]
print(f"  max |Σ weight·β| of {len(residual)} published books: {max(residual, default=0):.5f} (core_policy.yaml beta_tolerance: 0.01)")'
say "current signals in Redis (${NS}:{fx_g10}:sig:*), read through the guard"
for s in EURUSD GBPUSD USDJPY AUDUSD USDCAD EURJPY; do
  printf '  %-7s ' "$s"
  redis-cli -u "$MLCORE_REDIS_URL" FCALL_RO mlcore_read_v2 1 "${NS}:{fx_g10}:sig:$s" | paste -sd' ' | cut -c1-150
done
say "the newest stream entry (one per accepted decision, its signals as JSON):"
redis-cli -u "$MLCORE_REDIS_URL" XREVRANGE "${NS}:{fx_g10}:signals" + - COUNT 1 | paste -sd' ' | cut -c1-400

say "counters and trigger -> acknowledged-by-Redis latency (buckets in seconds)"
curl -fs "http://$HTTP/metrics" | grep -E '^ml_assets_core_(decisions_total|signals_accepted_total|batches_total.*accepted|decisions_dropped_total)'
curl -fs "http://$HTTP/metrics" | grep -E 'stage_latency_seconds_(bucket|count).*trigger_to_ack' | sed 's/^ml_assets_core_stage_latency_seconds_/  /'
say "the registry: status and what the daemon reports as loaded"
as_operator models list | grep -E '"(id|status)"|"loaded_by"' -A1 | grep -vE '^\s*--$' | tail -12
# A config change request: θ for fx_g10, taken by the running daemon.
signals_since() { # the stream entries after $1 (an entry id), as JSON books
  redis-cli -u "$MLCORE_REDIS_URL" --json XRANGE "${NS}:{fx_g10}:signals" "($1" + | python3 -c '
import json, sys
for _, f in json.load(sys.stdin):
    print(dict(zip(f[::2], f[1::2]))["signals"])'
}
last_entry() { redis-cli -u "$MLCORE_REDIS_URL" XREVRANGE "${NS}:{fx_g10}:signals" + - COUNT 1 | head -1; }
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
say "config change request: θ for fx_g10 (θ1 0.65, θ2 0.60) — proposed by the operator, validated for every environment, risk-scored"
CR=$(as_operator config propose --title "demo: θ for fx_g10" \
  --set envs/dev/core_policy.yaml:theta.per_strategy.fx_g10.theta1=0.65 \
  --set envs/dev/core_policy.yaml:theta.per_strategy.fx_g10.theta2=0.60 --submit | json_field '["id"]')
as_viewer() { MLCORE_TOKEN=dev-viewer-token "$CONTROL" "$@"; }
as_viewer config diff --id "$CR"
say "high risk (a θ override replaces the model's θ): two approvers — the approver and the admin"
as_approver config approve --id "$CR" >/dev/null
as_admin config approve --id "$CR" >/dev/null
say "merge and apply: the daemon takes it between two decisions, without a restart"
as_operator config apply --id "$CR" | python3 -c '
import json, sys
a = json.load(sys.stdin)
r = a["request"]
print("  %s %s: taken by %s, %d ms from deployment to the heartbeat; version %s" % (r["id"], r["state"], ", ".join(a["daemons"]["took"]), a["apply_ms"], r["merged_commit"][:12]))
sys.exit(0 if r["state"] == "applied" else 1)' || die "the θ change was not applied"
as_viewer config status | grep -E '"(version|deployed)"' | head -3
FROM=$(last_entry)
say "replaying 5 s more: every position now clears θ1 0.65 (p > 0.65 long, p < 0.35 short)"
"$BIN/mlcore-feed" --env dev --dataset "$DATA" --addr "$INGRESS" --speed 120 --trigger-every-ms 100 --seconds 5
signals_since "$FROM" | python3 -c '
import json, sys
books = [json.loads(l) for l in sys.stdin if l.strip()]
held = [s for b in books for s in b if s["side"] != "flat"]
bad = [s for s in held if not (s["return_prob"] > 0.65 if s["side"] == "long" else s["return_prob"] < 0.35)]
print(f"  {len(books)} decisions after the change: {len(held)} positions, {len(bad)} against θ1 0.65")
sys.exit(1 if bad else 0)' || die "a published position contradicts the applied θ"
say "roll it back: a request of its own; it only restores the previous version, so one approver suffices (fast path)"
RB=$(as_operator config rollback --id "$CR" | json_field '["id"]')
as_approver config approve --id "$RB" >/dev/null
as_operator config apply --id "$RB" | json_field '["request"]["state"]' | sed 's/^/  rollback: /'
say "the requests' history is in audit.config_changes and the hash-chained audit log; config list shows them"
as_viewer config list | grep -E '"(id|state|risk)"' | head -6

say "done; the daemon and the control plane stop with this script"
