#!/usr/bin/env bash
# What building the workspace needs beyond the Rust toolchain: the research
# crate's tree learner is LightGBM, which lightgbm3-sys builds from source
# with CMake ≥ 3.28 (pinned, from PyPI, into .tools/cmake: Debian 12 ships
# 3.25) and binds with bindgen (clang and libclang, Debian packages).
# Prints the variable that points the cmake crate at that CMake.
#   eval "$(bash scripts/setup-build-tools.sh)"
source "$(dirname "$0")/lib.sh"
need_binary clang clang
if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; then
  need_binary __libclang_dev__ libclang-dev
fi
ensure_venv cmake
echo "export CMAKE=$ROOT/.tools/cmake/bin/cmake"
