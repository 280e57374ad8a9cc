#!/usr/bin/env bash
# The Python tools the tests drive, each in its own virtualenv under .tools/
# with every package pinned (scripts/python/<tool>.txt). Prints the
# environment variables that point the tests at them.
#   eval "$(bash scripts/setup-python-tools.sh)"
source "$(dirname "$0")/lib.sh"
ensure_venv schemathesis
echo "export MLCORE_SCHEMATHESIS=$ROOT/.tools/schemathesis/bin/st"
