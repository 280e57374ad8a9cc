#!/usr/bin/env bash
# The product's main job on one machine. Today: fetch ONNX Runtime, make sure
# Redis and PostgreSQL answer, build the binaries, validate the dev
# configuration and run the daemon's preflight (config + ONNX Runtime scoring
# a canary model). It grows into the full demo as the daemon lands.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

bash scripts/setup-ort.sh
eval "$(bash scripts/services.sh)"

say "building release binaries into $CARGO_TARGET_DIR"
cargo build --release --locked -p mlcore-daemon -p mlcore-control
BIN="$CARGO_TARGET_DIR/release"

say "mlcore-control config check --env dev"
"$BIN/mlcore-control" config check --env dev --quiet
say "mlcore-daemon check --env dev"
"$BIN/mlcore-daemon" check --env dev
