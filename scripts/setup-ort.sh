#!/usr/bin/env bash
# Fetches ONNX Runtime 1.31.1 for `ort` (load-dynamic): downloads the pinned
# onnxruntime wheel with pip, checks its sha256, and extracts
# libonnxruntime.so.1.31.1 into .ort/lib/ (git-ignored). Idempotent.
source "$(dirname "$0")/lib.sh"

ORT_VERSION=1.31.1
WHEEL="onnxruntime-${ORT_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
LIB_SHA256=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
LIB="$ROOT/.ort/lib/libonnxruntime.so.${ORT_VERSION}"
CACHE="${MLCORE_WHEEL_CACHE:-$HOME/.cache/mlcore-wheels}"

if [ -f "$LIB" ] && echo "$LIB_SHA256  $LIB" | sha256sum -c --status; then
  say "ONNX Runtime $ORT_VERSION already at $LIB"
  exit 0
fi

mkdir -p "$CACHE" "$(dirname "$LIB")"
if ! { [ -f "$CACHE/$WHEEL" ] && echo "$WHEEL_SHA256  $CACHE/$WHEEL" | sha256sum -c --status; }; then
  say "downloading $WHEEL with pip"
  # The wheel is chosen by tags, not by the local Python, so every machine gets
  # the same file and the same hash.
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_28_x86_64 \
    -d "$CACHE" "onnxruntime==${ORT_VERSION}" >&2
fi
echo "$WHEEL_SHA256  $CACHE/$WHEEL" | sha256sum -c --status \
  || die "sha256 of $CACHE/$WHEEL does not match the pinned $WHEEL_SHA256; refusing to use it"

say "extracting libonnxruntime.so.${ORT_VERSION} to $LIB"
python3 - "$CACHE/$WHEEL" "$LIB" <<'PY'
import shutil, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z, z.open("onnxruntime/capi/libonnxruntime.so.1.31.1") as src, open(dest + ".tmp", "wb") as out:
    shutil.copyfileobj(src, out)
PY
mv "$LIB.tmp" "$LIB"
echo "$LIB_SHA256  $LIB" | sha256sum -c --status || die "extracted library has an unexpected sha256"
say "ONNX Runtime $ORT_VERSION ready at $LIB"
