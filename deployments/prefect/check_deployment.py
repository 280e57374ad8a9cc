"""Checks the Kubernetes deployment of core_retrain_flow without a cluster:
prefect.yaml's entrypoint is the flow and its parameters are the flow's, the
work pool's base job template passes Prefect's own validation, every job
variable the deployment sets is one the template declares, and the rendered
Job mounts the shared volume the steps' store lives on. Run from the
repository root (tests/tests/retrain.rs does)."""

import importlib.util, inspect, json, sys
import yaml
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.utilities.templating import apply_values

d = yaml.safe_load(open("deployments/prefect/prefect.yaml"))
dep = d["deployments"][0]
path, name = dep["entrypoint"].split(":")
spec = importlib.util.spec_from_file_location("flowmod", path)
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
f = getattr(m, name)
assert f.name == "core_retrain_flow", f.name
params = set(inspect.signature(f.fn).parameters)
assert set(dep["parameters"]) <= params, (dep["parameters"], params)
pool = json.load(open("deployments/prefect/k8s-work-pool.json"))
WorkPoolCreate(name=dep["work_pool"]["name"], type="kubernetes", base_job_template=pool)
props = pool["variables"]["properties"]
jv = dep["work_pool"]["job_variables"]
for k in jv:
    assert k in props, f"job variable {k} is not in the pool's template"
values = {k: v.get("default") for k, v in props.items()}
values.update(jv)
job = apply_values(pool["job_configuration"]["job_manifest"], values)
pod = job["spec"]["template"]["spec"]
claim = [v for v in pod["volumes"] if "persistentVolumeClaim" in v][0]
assert claim["persistentVolumeClaim"]["claimName"] == jv["storage_claim"], claim
assert pod["containers"][0]["image"] == jv["image"]
print(json.dumps({"flow": f.name, "deployment": dep["name"], "pool": dep["work_pool"]["name"]}))
