"""Every manifest in infra/ checked offline: it parses; Kubernetes core kinds validate against the
bundled Kubernetes schemas (kubernetes-validate, strict: unknown fields fail); KubeRay resources have
the fields KubeRay requires and their pod templates validate as pods; the `ray up` config validates
against Ray's own schema; every `ganpipe` command is a real verb with valid options; images, secret
names and ports agree across files; no secret value is inlined."""
import json
import re
import shlex
from pathlib import Path

import kubernetes_validate
import pytest
import typer
import yaml

from pipeline.cli import app

REPO = Path(__file__).resolve().parents[3]
INFRA = REPO / "infra"
K8S_VERSION = "1.30"
IMAGE_CPU, IMAGE_GPU = "ganpipe:0.1.0", "ganpipe:0.1.0-gpu"
SECRETS = {"ganpipe-aws", "mlflow-client", "mlflow-backend", "mlflow-auth"}
MLFLOW_URI = "http://mlflow.mlflow.svc.cluster.local:5000"


def _docs():
    return [(p, d) for p in sorted(INFRA.rglob("*.yaml")) if "ray-up" not in p.parts for d in yaml.safe_load_all(p.read_text()) if d]


def _walk(node):
    yield node
    if isinstance(node, dict):
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _pod_specs(doc):
    kind, spec = doc["kind"], doc.get("spec", {})
    if kind in ("RayCluster", "RayJob"):
        cluster = spec["rayClusterSpec"] if kind == "RayJob" else spec
        yield cluster["headGroupSpec"]["template"]["spec"]
        for group in cluster["workerGroupSpecs"]:
            yield group["template"]["spec"]
    elif kind == "Deployment":
        yield spec["template"]["spec"]
    elif kind == "CronJob":
        yield spec["jobTemplate"]["spec"]["template"]["spec"]


def test_every_manifest_parses_and_core_kinds_validate_offline():
    docs = _docs()
    kinds = {d["kind"] for _, d in docs}
    assert {"RayCluster", "RayJob", "CronJob", "Deployment", "Service"} <= kinds
    for path, doc in docs:
        if doc["apiVersion"].startswith("ray.io/"):
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises on any schema violation


def test_the_validator_catches_a_wrong_field():
    cron = yaml.safe_load((INFRA / "kuberay/cronjob-schedule.yaml").read_text())
    cron["spec"]["concurrencyPolicy"] = 7
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(cron, K8S_VERSION, strict=True)
    cron["spec"]["concurrencyPolicy"] = "Forbid"
    cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"  # typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(cron, K8S_VERSION, strict=True)


def test_kuberay_resources_have_required_fields_and_valid_pod_templates():
    ray_docs = [d for _, d in _docs() if d["apiVersion"] == "ray.io/v1"]
    assert {d["kind"] for d in ray_docs} == {"RayCluster", "RayJob"}
    for doc in ray_docs:
        assert doc["metadata"]["name"]
        cluster = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
        if doc["kind"] == "RayJob":
            assert doc["spec"]["entrypoint"].strip()
            yaml.safe_load(doc["spec"].get("runtimeEnvYAML", "{}"))  # KubeRay parses it as YAML
        assert cluster["rayVersion"] == "2.60.0"
        head = cluster["headGroupSpec"]
        assert isinstance(head["rayStartParams"], dict) and all(isinstance(v, str) for v in head["rayStartParams"].values())
        for group in cluster.get("workerGroupSpecs", []):
            assert group["groupName"] and isinstance(group["rayStartParams"], dict)
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        for pod_spec in _pod_specs(doc):
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": pod_spec}
            kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def test_ray_up_config_validates_against_rays_schema():
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler/ray-schema.json").read_text())

    config = yaml.safe_load((INFRA / "ray-up/aws-gpu.yaml").read_text())
    jsonschema.validate(config, schema)
    gpu = config["available_node_types"]["gpu"]
    assert gpu["node_config"]["InstanceType"].startswith(("g", "p")) and gpu["max_workers"] >= 1
    assert config["docker"]["image"] == IMAGE_GPU
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**config, "head_node_typ": "head"}, schema)  # the schema refuses unknown keys


def _ganpipe_commands():
    """Every ganpipe command line in the manifests: RayJob entrypoints and container commands."""
    for path, doc in _docs():
        if doc["kind"] == "RayJob":
            yield path, shlex.split(doc["spec"]["entrypoint"])
        for pod_spec in _pod_specs(doc):
            for c in pod_spec["containers"]:
                cmd = [*c.get("command", []), *c.get("args", [])]
                if cmd[:1] == ["ganpipe"]:
                    yield path, cmd


def _parse(argv: list[str]):
    """Resolve `ganpipe VERB [SUBVERB] ...` to its leaf command and parse its options as the CLI
    would (unknown options, missing arguments, bad values raise the CLI's UsageError).
    typer vendors its own click, so groups are recognised by what they do, not by class."""
    assert argv[0] == "ganpipe"
    command, words, ctx = typer.main.get_command(app), list(argv[1:]), None
    while hasattr(command, "get_command"):
        ctx = command.make_context(command.name or "ganpipe", [], parent=ctx, resilient_parsing=True)
        name, words = words[0], words[1:]
        sub = command.get_command(ctx, name)
        assert sub is not None, f"ganpipe has no verb {name!r}"
        command = sub
    command.make_context(command.name, words, parent=ctx)
    return command


def test_every_ganpipe_command_is_a_real_verb_with_valid_options():
    seen = []
    for path, argv in _ganpipe_commands():
        seen.append((path.name, _parse(argv).name))
        for word in argv:  # files the command names exist in the image (copied from the repo)
            if word.endswith(".yaml") and "://" not in word:
                assert (REPO / word).is_file(), f"{path.name}: {word} does not exist"
    assert ("cronjob-schedule.yaml", "tick") in seen and ("rayjob-quickstart.yaml", "train") in seen


def test_a_wrong_option_or_verb_would_be_caught():
    with pytest.raises(Exception, match="adress") as e:
        _parse(["ganpipe", "schedule", "tick", "s.yaml", "--adress", "x"])
    assert "UsageError" in [c.__name__ for c in type(e.value).__mro__]
    with pytest.raises(AssertionError, match="no verb 'tock'"):
        _parse(["ganpipe", "schedule", "tock", "s.yaml"])


def test_images_secrets_and_ports_agree_across_files():
    docs = _docs()
    images = {c["image"] for _, d in docs for s in _pod_specs(d) for c in s["containers"]}
    assert images == {IMAGE_CPU, IMAGE_GPU}
    dockerfile = (INFRA / "docker/Dockerfile").read_text()
    assert f"-t {IMAGE_CPU} ." in dockerfile and f"FLAVOR=gpu -t {IMAGE_GPU} ." in dockerfile
    # secrets: only the documented names, referenced, never defined with data in a manifest
    referenced = {n["secretRef"]["name"] for _, d in docs for n in _walk(d) if isinstance(n, dict) and "secretRef" in n}
    referenced |= {n["secretKeyRef"]["name"] for _, d in docs for n in _walk(d) if isinstance(n, dict) and "secretKeyRef" in n}
    referenced |= {n["secret"]["secretName"] for _, d in docs for n in _walk(d) if isinstance(n, dict) and "secretName" in n.get("secret", {})}
    assert referenced == SECRETS
    assert not [d for _, d in docs if d["kind"] == "Secret"]
    for _, d in docs:
        for node in _walk(d):
            if isinstance(node, dict) and "value" in node and "name" in node:
                assert not re.search(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY)", node["name"]), node
    # MLflow: the Service's port is the one every client is pointed at
    service = next(d for _, d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "mlflow")
    port = service["spec"]["ports"][0]["port"]
    assert MLFLOW_URI.endswith(f".{service['metadata']['namespace']}.svc.cluster.local:{port}")
    uris = {n["value"] for _, d in docs for n in _walk(d) if isinstance(n, dict) and n.get("name") == "MLFLOW_TRACKING_URI"}
    uris |= {yaml.safe_load(d["spec"]["runtimeEnvYAML"])["env_vars"]["MLFLOW_TRACKING_URI"] for _, d in docs if d["kind"] == "RayJob"}
    assert uris == {MLFLOW_URI}
    deployment = next(d for _, d in docs if d["kind"] == "Deployment")
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--port") + 1] == str(port) and "basic-auth" in command
    # the CronJob ticks against the RayCluster's head service (KubeRay names it NAME-head-svc) on the dashboard port
    cluster = next(d for _, d in docs if d["kind"] == "RayCluster")
    cron = next(d for _, d in docs if d["kind"] == "CronJob")
    tick = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert tick[tick.index("--address") + 1] == f"http://{cluster['metadata']['name']}-head-svc:8265"
    head_ports = {p["containerPort"] for p in cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]}
    assert 8265 in head_ports
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
