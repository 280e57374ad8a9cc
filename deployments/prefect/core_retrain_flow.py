"""core_retrain_flow on Prefect 3: the retraining flow's steps as tasks.

The same steps `mlcore-control retrain` runs in one process, driven one at a
time, with the validation's folds and the θ search's grid trials fanned out
as tasks of their own. Every task calls the `mlcore-control` binary; what
they exchange lives in the step store under storage.yaml's `runs_root`
(shared storage when the tasks run on several machines), content-addressed,
so a task that ran before is free, a retried task redoes only its own
work, and the result is the in-process run's, byte for byte
(tests/tests/retrain.rs checks it). The strategy's lock, the run's manifest,
its report, the registry and the announcements are the binary's, as in the
in-process run.

    python deployments/prefect/core_retrain_flow.py --env dev --strategy fx_g10

`MLCORE_CONTROL` names the binary (default: `mlcore-control` on PATH).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from prefect import flow, task
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

#: Exit codes of `mlcore-control retrain` that are outcomes, not failures:
#: 0 done (or registered), 10 the candidate lost to the active model.
OUTCOMES = (0, 10)

BEFORE_FOLDS = ("dataset", "features", "labels")
BETWEEN = ("validation", "train", "export")
AFTER_TRIALS = ("theta", "backtest", "challenge", "sign", "register")


def control(config_dir: str, *args: str) -> str:
    """Runs `mlcore-control --config-dir CONFIG_DIR ARGS`; its stdout, or an
    error carrying its output when it exits with a failure."""
    binary = os.environ.get("MLCORE_CONTROL", "mlcore-control")
    cmd = [binary, "--config-dir", config_dir, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode not in OUTCOMES:
        raise RuntimeError(
            f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    return done.stdout


def retrain(config_dir: str, env: str, strategy: str, *args: str) -> str:
    return control(config_dir, "retrain", "--env", env, "--strategy", strategy, "--quiet", *args)


# No retries: a failed step fails the run (and alerts); resume it by
# running the flow again with its run_id.
@task(name="step", task_run_name="{name}")
def step(config_dir: str, env: str, strategy: str, run_id: str, name: str) -> str:
    """One step of the run (its upstream steps done)."""
    return retrain(config_dir, env, strategy, "--resume", run_id, "--step", name)


@task(name="unit", retries=1, retry_delay_seconds=2, task_run_name="{kind}-{index}")
def unit(config_dir: str, env: str, strategy: str, run_id: str, kind: str, index: int) -> str:
    """One fold of the validation or one trial of the θ grid, into the store."""
    return retrain(config_dir, env, strategy, "--resume", run_id, "--unit", f"{kind}:{index}")


def plan(config_dir: str, env: str, strategy: str, run_id: str) -> dict:
    return json.loads(retrain(config_dir, env, strategy, "--resume", run_id, "--dry-run", "--json"))


@flow(name="core_retrain_flow", task_runner=ThreadPoolTaskRunner(max_workers=int(os.environ.get("MLCORE_PREFECT_WORKERS", "2"))))
def core_retrain_flow(env: str, strategy: str, config_dir: str = "configs", run_id: str | None = None) -> dict:
    """Retrains `strategy` in `env` (or resumes `run_id`); returns the run's
    manifest (`runs/<run_id>/manifest.json`)."""
    if run_id is None:
        run_id = json.loads(retrain(config_dir, env, strategy, "--create"))["run_id"]
    units = plan(config_dir, env, strategy, run_id)["units"]

    def steps(names: tuple[str, ...]) -> None:
        for name in names:
            step(config_dir, env, strategy, run_id, name)

    def fan_out(kind: str, count: int) -> None:
        futures = [unit.submit(config_dir, env, strategy, run_id, kind, i) for i in range(count)]
        wait(futures)
        for f in futures:
            f.result()  # raises the first failure

    steps(BEFORE_FOLDS)
    fan_out("fold", units["fold"])
    steps(BETWEEN)
    fan_out("trial", units["trial"])
    steps(AFTER_TRIALS)
    return manifest(config_dir, env, strategy, run_id)


def manifest(config_dir: str, env: str, strategy: str, run_id: str) -> dict:
    """The run's manifest, as `mlcore-control retrain --show` prints it."""
    return json.loads(retrain(config_dir, env, strategy, "--resume", run_id, "--show"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", required=True)
    p.add_argument("--strategy", required=True)
    p.add_argument("--config-dir", default="configs")
    p.add_argument("--run-id")
    a = p.parse_args()
    m = core_retrain_flow(env=a.env, strategy=a.strategy, config_dir=a.config_dir, run_id=a.run_id)
    print(json.dumps({"run_id": m["run_id"], "status": m["status"], "model_id": m["model_id"], "verdict": m["verdict"]}))
    return 0 if m["status"] in ("succeeded", "rejected") else 1


if __name__ == "__main__":
    sys.exit(main())
