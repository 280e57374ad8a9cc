#!/usr/bin/env bash
# The product's main job on one machine. Today: fetch ONNX Runtime, make sure
# Redis and PostgreSQL answer, build the binaries, validate the dev
# configuration, generate the synthetic market, train and sign a model, verify
# it, and run the daemon's preflight (config + ONNX Runtime scoring a canary).
# It grows into feed → daemon → signals in Redis as the daemon lands.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

bash scripts/setup-ort.sh
eval "$(bash scripts/services.sh)"

say "building release binaries into $CARGO_TARGET_DIR"
cargo build --release --locked -p mlcore-daemon -p mlcore-control
BIN="$CARGO_TARGET_DIR/release"
CONTROL="$BIN/mlcore-control"

say "mlcore-control config check --env dev"
"$CONTROL" config check --env dev --quiet

DATA="$RUN_DIR/datasets/synth-seed7"
if [ -f "$DATA/dataset_index.json" ]; then
  say "synthetic market already at $DATA"
else
  say "generating the synthetic market (32 symbols, 3 days, 5 s quotes) into $DATA"
  "$CONTROL" data synth --seed 7 --symbols 32 --days 3 --out "$DATA"
fi

MODELS="$RUN_DIR/models/fx_g10"
mkdir -p "$MODELS"
VERSION=$(( $(find "$MODELS" -mindepth 1 -maxdepth 1 -type d -name 'v*' | wc -l) + 1 ))
say "training fx_g10 v$VERSION (GBDT ai1 + logistic ai2), signing with the dev key"
"$CONTROL" train --env dev --dataset "$DATA" --out "$MODELS/v$VERSION" \
  --key deployments/dev-keys/dev-2026.key --strategy fx_g10 --version "$VERSION"

say "verifying the artifact against dev's trust.yaml"
"$CONTROL" models verify --env dev --artifact "$MODELS/v$VERSION"

say "mlcore-daemon check --env dev"
"$BIN/mlcore-daemon" check --env dev
