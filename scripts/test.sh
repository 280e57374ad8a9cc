#!/usr/bin/env bash
# Every check and every test, against real Redis, PostgreSQL and ONNX Runtime:
# formatting, clippy with -D warnings, then all tests with cargo-nextest.
# Installs or starts what it needs first and says so.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

bash scripts/setup-ort.sh
eval "$(bash scripts/services.sh)"
export ORT_DYLIB_PATH="$ROOT/.ort/lib/libonnxruntime.so.1.31.1"

say "cargo fmt --check"
cargo fmt --all --check
say "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
if ! cargo nextest --version >/dev/null 2>&1; then
  say "cargo-nextest is missing: installing it with cargo"
  cargo install --locked cargo-nextest >&2
fi
# Doc tests first: nextest does not run them, and its summary should be the
# last line of the run.
say "doc tests"
cargo test --workspace --locked --doc --quiet
say "cargo nextest run (Redis $MLCORE_TEST_REDIS_URL, PostgreSQL $MLCORE_TEST_PG_DSN)"
cargo nextest run --workspace --locked --no-fail-fast "$@"
