#!/usr/bin/env bash
# The Python tools the tests and benchmarks drive, each in its own virtualenv under .tools/
# with every package pinned (scripts/python/<tool>.txt). Prints the
# environment variables that point the tests at them.
#   eval "$(bash scripts/setup-python-tools.sh)"
source "$(dirname "$0")/lib.sh"
ensure_venv schemathesis
echo "export MLCORE_SCHEMATHESIS=$ROOT/.tools/schemathesis/bin/st"
# LightGBM: the reference mlcore-learner-bench compares our learners with.
ensure_venv lightgbm
echo "export MLCORE_LIGHTGBM_PYTHON=$ROOT/.tools/lightgbm/bin/python"
# Prefect 3: the retraining flow's scale-out (deployments/prefect/), run by
# its test with Prefect's local runner.
ensure_venv prefect
echo "export MLCORE_PREFECT_PYTHON=$ROOT/.tools/prefect/bin/python"
# The Python reference stack (onnxruntime + redis-py) the side-by-side
# bench runs, and the Python consumer example's client.
ensure_venv reference
echo "export MLCORE_REFERENCE_PYTHON=$ROOT/.tools/reference/bin/python"
