#!/usr/bin/env bash
# Every check and every test, against real Redis, PostgreSQL and ONNX Runtime:
# formatting, clippy with -D warnings, dependency hygiene (cargo-deny:
# licenses, bans, sources; cargo-machete: no unused dependency), then all
# tests with cargo-nextest. Installs or starts what it needs first (pinned
# tool versions) and says so.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

bash scripts/setup-ort.sh
# CMake, clang: LightGBM is built from source (the research crate's learner).
eval "$(bash scripts/setup-build-tools.sh)"
# promtool (Debian's prometheus package) checks the processes' /metrics.
need_binary promtool prometheus
eval "$(bash scripts/services.sh)"
# schemathesis (pinned, in .tools/) fuzzes the control API in the suite.
eval "$(bash scripts/setup-python-tools.sh)"
export ORT_DYLIB_PATH="$ROOT/.ort/lib/libonnxruntime.so.1.31.1"

say "cargo fmt --check"
cargo fmt --all --check
say "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
# Tool versions, pinned: a new release cannot change what CI checks.
NEXTEST_VERSION=0.9.143
DENY_VERSION=0.20.2
MACHETE_VERSION=0.9.2
ensure_cargo_tool cargo-nextest cargo-nextest "$NEXTEST_VERSION"
ensure_cargo_tool cargo-deny cargo-deny "$DENY_VERSION"
ensure_cargo_tool cargo-machete cargo-machete "$MACHETE_VERSION"
# cargo-deny reads the whole graph, every platform's crates included
# (windows-sys, ...): fetch them first, or --offline fails on a machine
# whose cache holds only this platform's.
cargo fetch --locked --quiet
say "cargo deny check bans licenses sources"
cargo deny --offline --locked check bans licenses sources
say "cargo machete (unused dependencies)"
cargo machete
# Doc tests first: nextest does not run them, and its summary should be the
# last line of the run.
say "doc tests"
cargo test --workspace --locked --doc --quiet
# End-to-end tests start the workspace's binaries (mlcore-feed, ...) from
# the target dir; a package without tests of its own would not be built.
say "cargo build --bins"
cargo build --workspace --bins --locked --quiet
say "cargo nextest run (Redis $MLCORE_TEST_REDIS_URL, PostgreSQL $MLCORE_TEST_PG_DSN)"
cargo nextest run --workspace --locked --no-fail-fast "$@"
