# Shared helpers for the project's scripts. Source it; do not run it.
# Everything here says what it does on stderr, prefixed with the script name.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT
# Builds live outside the clone so repeated CI runs and fresh clones reuse them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mlcore-target}"
export MLCORE_CONFIG_DIR="${MLCORE_CONFIG_DIR:-$ROOT/configs}"
RUN_DIR="$ROOT/.run"
mkdir -p "$RUN_DIR"

say() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# A free TCP port on 127.0.0.1 (the kernel picks it; a race with another
# process is possible but harmless: the server start then fails loudly).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Installs Debian packages when a binary is missing and we are root.
need_binary() {
  local bin="$1" pkg="$2"
  if command -v "$bin" >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/"$bin" >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" = 0 ]; then
    say "$bin is missing: installing Debian package $pkg"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >&2
  else
    die "$bin is missing and we are not root: install the Debian package $pkg"
  fi
}

# Makes sure the cargo subcommand `bin` (crate `crate`) is at `version`,
# installing that version with `cargo install --locked` when it is missing
# or another version. Built outside the project's target dir.
ensure_cargo_tool() {
  local bin="$1" crate="$2" version="$3"
  if "$bin" --version 2>/dev/null | grep -qw "$version"; then
    return 0
  fi
  say "$crate $version is missing: installing it with cargo (once per machine)"
  (unset CARGO_TARGET_DIR; cargo install --locked --quiet "$crate" --version "$version") >&2
}

# Makes sure $ROOT/.tools/<name> is a virtualenv holding exactly the pinned
# packages of scripts/python/<name>.txt (every transitive dependency is
# listed, installed with --no-deps, then `pip check`ed). Reinstalls when the
# file changes; git-ignored.
ensure_venv() {
  local name="$1"
  local req="$ROOT/scripts/python/$name.txt" dir="$ROOT/.tools/$name"
  local want
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [ -f "$dir/.pinned" ] && [ "$(cat "$dir/.pinned")" = "$want" ]; then
    return 0
  fi
  say "$name: installing the packages pinned in scripts/python/$name.txt into .tools/$name"
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$req" >&2
  "$dir/bin/pip" check --disable-pip-version-check >&2 || die "$name: scripts/python/$name.txt misses a dependency"
  echo "$want" >"$dir/.pinned"
}
