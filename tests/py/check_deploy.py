"""Checks the deployment files (deploy/, Dockerfile) as their own tools would read them:
YAML by PyYAML, the DAG by Python's compiler, systemd units as INI, the Dockerfile's COPY
sources on disk. Prints JSON: {"problems": [...], "pipelines": {name: toml_text}} with the
pipeline files embedded in the Kubernetes ConfigMap (the Rust test validates them with the
binary). Usage: check_deploy.py ROOT"""

import ast
import configparser
import json
import os
import shlex
import sys

import yaml


def check_kubernetes(root, problems, pipelines):
    path = os.path.join(root, "deploy/kubernetes/cronjob.yaml")
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    kinds = {d.get("kind"): d for d in docs}
    for kind in ("ConfigMap", "CronJob"):
        if kind not in kinds:
            problems.append(f"{path}: no {kind}")
    for name, text in kinds.get("ConfigMap", {}).get("data", {}).items():
        pipelines[f"configmap/{name}"] = text
    cron = kinds.get("CronJob", {}).get("spec", {})
    if cron.get("concurrencyPolicy") != "Forbid":
        problems.append(f"{path}: concurrencyPolicy is not Forbid")
    job = cron.get("jobTemplate", {}).get("spec", {})
    rules = job.get("podFailurePolicy", {}).get("rules", [])
    if not any(3 in r.get("onExitCodes", {}).get("values", []) and r.get("action") == "FailJob"
               for r in rules):
        problems.append(f"{path}: exit 3 does not end the Job without retries")
    pod = job.get("template", {}).get("spec", {})
    containers = pod.get("containers", [])
    if len(containers) != 1:
        problems.append(f"{path}: expected one container")
        return
    c = containers[0]
    secret_vars = {e["name"] for e in c.get("env", [])
                   if "secretKeyRef" in e.get("valueFrom", {})}
    for var in ("AMPLITUDE_API_KEY", "AMPLITUDE_SECRET_KEY"):
        if var not in secret_vars:
            problems.append(f"{path}: {var} does not come from a Secret")
    mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
    for arg in c.get("args", []):
        if arg.startswith("/pipelines/") and "/pipelines" not in mounts:
            problems.append(f"{path}: {arg} is not mounted")
    for arg in c.get("args", []):
        if arg.startswith("/pipelines/") and f"configmap/{os.path.basename(arg)}" not in pipelines:
            problems.append(f"{path}: {arg} is not in the ConfigMap")
    if pod.get("securityContext", {}).get("runAsNonRoot") is not True:
        problems.append(f"{path}: the pod may run as root")


def check_airflow(root, problems):
    path = os.path.join(root, "deploy/airflow/cohort_sync_dag.py")
    with open(path) as f:
        source = f.read()
    tree = ast.parse(source, path)
    compile(tree, path, "exec")
    skips = [kw for node in ast.walk(tree) if isinstance(node, ast.Call)
             for kw in node.keywords if kw.arg == "skip_on_exit_code"]
    if not skips:
        problems.append(f"{path}: no task treats exit 3 as a skip")
    consts = {t.id: n.value.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
              for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
    for kw in skips:
        value = kw.value.value if isinstance(kw.value, ast.Constant) else consts.get(
            getattr(kw.value, "id", None))
        if value != 3:
            problems.append(f"{path}: skip_on_exit_code is {value!r}, not 3")
    for name in ("export.toml", "crm-reverse.toml"):
        if f"{{PIPELINES}}/{name}" not in source:
            problems.append(f"{path}: does not run {name}")
        if not os.path.exists(os.path.join(root, "deploy/airflow/pipelines", name)):
            problems.append(f"{path}: deploy/airflow/pipelines/{name} is missing")


def unit(path):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    with open(path) as f:
        parser.read_file(f)
    return parser


def check_systemd(root, problems):
    service_path = os.path.join(root, "deploy/systemd/cohort-sync.service")
    timer_path = os.path.join(root, "deploy/systemd/cohort-sync.timer")
    service, timer = unit(service_path), unit(timer_path)
    for section in ("Unit", "Service", "Install"):
        if not service.has_section(section):
            problems.append(f"{service_path}: no [{section}]")
    s = service["Service"] if service.has_section("Service") else {}
    if "3" not in s.get("SuccessExitStatus", "").split():
        problems.append(f"{service_path}: exit 3 is a failure")
    exec_start = shlex.split(s.get("ExecStart", ""))
    if exec_start[:2] != ["/usr/local/bin/cohort-sync", "run"]:
        problems.append(f"{service_path}: ExecStart does not run cohort-sync: {exec_start}")
    if s.get("User") in (None, "root"):
        problems.append(f"{service_path}: runs as root")
    t = timer["Timer"] if timer.has_section("Timer") else {}
    if not t.get("OnCalendar"):
        problems.append(f"{timer_path}: no OnCalendar")
    if t.get("Unit") != "cohort-sync.service":
        problems.append(f"{timer_path}: starts {t.get('Unit')!r}")


def check_dockerfile(root, problems):
    path = os.path.join(root, "Dockerfile")
    with open(path) as f:
        lines = f.read().replace("\\\n", " ").splitlines()
    instructions = [l.strip().split(None, 1) for l in lines if l.strip() and not l.strip().startswith("#")]
    froms = [i for i in instructions if i[0].upper() == "FROM"]
    if len(froms) < 2:
        problems.append(f"{path}: not a multi-stage build")
    copied = 0
    for ins in instructions:
        if ins[0].upper() != "COPY":
            continue
        args = shlex.split(ins[1])
        if any(a.startswith("--from") for a in args):
            continue
        args = [a for a in args if not a.startswith("--")]
        for src in args[:-1]:
            copied += 1
            if not os.path.exists(os.path.join(root, src)):
                problems.append(f"{path}: COPY {src}: no such path")
    if copied == 0:
        problems.append(f"{path}: copies nothing")
    users = [i[1] for i in instructions if i[0].upper() == "USER"]
    if not users or users[-1] in ("root", "0"):
        problems.append(f"{path}: the image runs as root")
    if not any(i[0].upper() == "RUN" and "strip" in i[1] for i in instructions):
        problems.append(f"{path}: the binary is not stripped")


def main(argv):
    root = argv[1]
    problems, pipelines = [], {}
    check_kubernetes(root, problems, pipelines)
    check_airflow(root, problems)
    check_systemd(root, problems)
    check_dockerfile(root, problems)
    print(json.dumps({"problems": problems, "pipelines": pipelines}))


if __name__ == "__main__":
    main(sys.argv)
