"""Tests of Kubernetes access (through the official client against kmock) and of vLLM command-line parsing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from inferno.config import Settings
from inferno.errors import ConfigError
from inferno.k8s import (
    ConfigMapStore,
    Deployment,
    KubeError,
    VllmContainer,
    connect,
    current_max_num_seqs,
    find_vllm_container,
)
from inferno.queueing import Workload, make_queue_model
from inferno.tuner import EKFTuner, Observation, Seed
from tests.support.kube import CONFIGMAPS, NODES, Emulator, deployment, node


def _container(*args: str, command: tuple[str, ...] = ()) -> VllmContainer:
    return VllmContainer(index=0, name="vllm", command=command, args=args)


@pytest.mark.parametrize(
    ("args", "command", "expected"),
    [
        (("--model", "m", "--max-num-seqs", "48"), (), 48),
        (("--model", "m", "--max-num-seqs=48"), (), 48),
        (("--max_num_seqs", "48"), (), 48),
        ((), ("python3", "-m", "vllm.entrypoints.openai.api_server", "--max-num-seqs=48"), 48),
        ((), ("/bin/sh", "-c", "exec vllm serve m --max-num-seqs 48 --port 8000"), 48),
        (("--max-num-seqs", "8", "--max-num-seqs", "48"), (), 48),
        (("--model", "m"), (), None),
    ],
)
def test_max_num_seqs_is_read_in_every_form(
    args: tuple[str, ...], command: tuple[str, ...], expected: int | None
) -> None:
    """Separate and '=' forms, underscores, in command or args or a shell line; the last one wins."""
    assert _container(*args, command=command).max_num_seqs == expected


def test_a_non_numeric_max_num_seqs_is_an_error() -> None:
    """'--max-num-seqs $(N)' is not a number: ValueError naming the container."""
    with pytest.raises(ValueError, match=r"container 'vllm': --max-num-seqs '\$\(N\)' is not a positive integer"):
        _ = _container("--max-num-seqs", "$(N)").max_num_seqs


@pytest.mark.parametrize(
    ("args", "command", "field", "items"),
    [
        (("--model", "m", "--max-num-seqs", "64"), (), "args", ["--model", "m", "--max-num-seqs", "32"]),
        (("--max-num-seqs=64", "--port", "80"), (), "args", ["--max-num-seqs=32", "--port", "80"]),
        (("--model", "m"), (), "args", ["--model", "m", "--max-num-seqs", "32"]),
        ((), ("sh", "-c", "vllm serve m --max-num-seqs=64"), "command", ["sh", "-c", "vllm serve m --max-num-seqs=32"]),
    ],
)
def test_rewriting_max_num_seqs_keeps_its_form(
    args: tuple[str, ...], command: tuple[str, ...], field: str, items: list[str]
) -> None:
    """The new value replaces the old one where and how it was written; absent, it is appended to args."""
    assert _container(*args, command=command).with_max_num_seqs(32) == (field, items)


def test_a_shell_line_without_the_flag_cannot_be_rewritten() -> None:
    """Appending args after 'sh -c SCRIPT' would not reach vLLM: ValueError."""
    with pytest.raises(ValueError, match="runs a shell script without --max-num-seqs"):
        _container(command=("bash", "-c", "vllm serve m")).with_max_num_seqs(32)


def _pod(*containers: dict[str, object]) -> Deployment:
    return Deployment.from_manifest(deployment("d", containers=list(containers)))


def test_the_vllm_container_is_found_by_name_or_command_line() -> None:
    """By configured name; else the one whose command line or image says vLLM; a lone container is it."""
    sidecar = {"name": "proxy", "image": "envoy:1", "args": ["--port", "80"]}
    by_command = {"name": "server", "image": "llm:1", "command": ["python", "-m", "vllm.entrypoints.openai.api_server"]}
    by_image = {"name": "engine", "image": "vllm/vllm-openai:v0.10", "args": ["--model", "m"]}
    assert find_vllm_container(_pod(sidecar, by_command)).index == 1
    assert find_vllm_container(_pod(by_image, sidecar)).name == "engine"
    assert find_vllm_container(_pod(sidecar, by_command), "proxy").name == "proxy"
    assert find_vllm_container(_pod({"name": "solo", "image": "x"})).name == "solo"


def test_an_ambiguous_or_absent_vllm_container_is_an_error() -> None:
    """Two vLLM-looking containers, none, or a wrong name: ValueError saying what to set."""
    one = {"name": "a", "image": "vllm/vllm-openai"}
    two = {"name": "b", "image": "vllm/vllm-openai"}
    with pytest.raises(ValueError, match=r"cannot tell which container runs vLLM \(containers: a, b\)"):
        find_vllm_container(_pod(one, two))
    with pytest.raises(ValueError, match="no container named 'c'"):
        find_vllm_container(_pod(one, two), "c")


def test_the_maxbatchsize_label_stands_in_for_the_flag() -> None:
    """Without --max-num-seqs, the predecessor's maxbatchsize label gives the value."""
    d = Deployment.from_manifest(
        deployment("d", args=["--model", "m"], labels={"inferno.server.allocation.maxbatchsize": "96"})
    )
    assert current_max_num_seqs(d, find_vllm_container(d)) == 96


def test_deployments_are_listed_in_all_or_some_namespaces(emulator: Emulator) -> None:
    """emulator: kmock. One cluster-wide list, or one list per namespace, each with the label selector."""
    emulator.add(deployment("a", namespace="n1"), deployment("b", namespace="n2"), deployment("c", namespace="n3"))
    kube = emulator.kube()
    assert sorted(d.name for d in kube.list_deployments((), "x=y")) == ["a", "b", "c"]
    assert [d.name for d in kube.list_deployments(("n1", "n3"), "x=y")] == ["a", "c"]
    paths = [(r.url.path, r.params.get("labelSelector")) for r in emulator.requests()]
    assert paths == [
        ("/apis/apps/v1/deployments", "x=y"),
        ("/apis/apps/v1/namespaces/n1/deployments", "x=y"),
        ("/apis/apps/v1/namespaces/n3/deployments", "x=y"),
    ]


def test_a_deployment_is_read_with_its_replicas_and_version(emulator: Emulator) -> None:
    """emulator: kmock. spec/ready/updated/available replicas, resourceVersion and generation are read."""
    emulator.add(deployment("a", replicas=3, ready=2, resource_version="41", generation=7))
    d = emulator.kube().get_deployment("llm", "a")
    assert (d.replicas, d.ready_replicas, d.updated_replicas, d.available_replicas) == (3, 2, 3, 2)
    assert (d.resource_version, d.generation, d.uid) == ("41", 7, "uid-a")


def test_a_json_patch_is_sent_as_such(emulator: Emulator) -> None:
    """emulator: kmock. patch_deployment sends application/json-patch+json and returns the new object."""
    emulator.add(deployment("a", replicas=1))
    after = emulator.kube().patch_deployment("llm", "a", [{"op": "replace", "path": "/spec/replicas", "value": 4}])
    assert after.replicas == 4
    (patch,) = emulator.requests("PATCH")
    assert patch.headers["Content-Type"] == "application/json-patch+json"
    assert patch.data == [{"op": "replace", "path": "/spec/replicas", "value": 4}]


def test_api_errors_carry_status_and_message(emulator: Emulator) -> None:
    """emulator: kmock. 404 is permanent, 409 transient; both say what failed and why."""
    kube = emulator.kube()
    with pytest.raises(KubeError, match=r"read Deployment llm/absent: HTTP 404") as missing:
        kube.get_deployment("llm", "absent")
    assert (missing.value.status, missing.value.transient) == (404, False)
    emulator.add(deployment("a"))
    emulator.fail("patch", "/apis/apps/v1/namespaces/llm/deployments/a", 409, "the object has been modified")
    with pytest.raises(KubeError, match="patch Deployment llm/a: HTTP 409: the object has been modified") as conflict:
        kube.patch_deployment("llm", "a", [])
    assert (conflict.value.status, conflict.value.transient) == (409, True)


def test_an_unreachable_api_server_is_a_transient_error(emulator: Emulator) -> None:
    """emulator: kmock (stopped). No answer: status 0, transient."""
    kube = emulator.kube(timeout=1.0)
    emulator.close()
    with pytest.raises(KubeError, match="list Deployments: no answer") as info:
        kube.list_deployments((), "")
    assert info.value.transient


def test_the_gpu_inventory_sums_schedulable_nodes(emulator: Emulator) -> None:
    """emulator: kmock. Allocatable nvidia.com/gpu per product; cordoned and GPU-less nodes do not count."""
    emulator.add(
        node("n1", "NVIDIA-H100-80GB-HBM3", 8),
        node("n2", "NVIDIA-H100-80GB-HBM3", 8),
        node("n3", "NVIDIA-A100-SXM4-80GB", 4),
        node("n4", "NVIDIA-A100-SXM4-80GB", 4, unschedulable=True),
        node("n5", None, 0),
        resource=NODES,
    )
    assert emulator.kube().gpu_inventory() == {"NVIDIA-A100-SXM4-80GB": 4, "NVIDIA-H100-80GB-HBM3": 16}
    assert emulator.requests()[0].params["labelSelector"] == "nvidia.com/gpu.product"


def test_connect_uses_the_kubeconfig_and_context(emulator: Emulator, tmp_path: Path) -> None:
    """emulator: kmock. A kubeconfig with a named context reaches the API server it names."""
    emulator.add(deployment("a"))
    path = emulator.kubeconfig(tmp_path / "config", context="lab")
    kube = connect(Settings(kubeconfig=path, context="lab"))
    assert [d.name for d in kube.list_deployments((), "")] == ["a"]
    assert emulator.requests()[0].headers["Authorization"] == "Bearer t"


def test_connect_reports_a_bad_kubeconfig(tmp_path: Path) -> None:
    """A missing kubeconfig file or unknown context is a ConfigError naming the file."""
    with pytest.raises(ConfigError, match=f"{tmp_path / 'none'}: cannot connect to Kubernetes"):
        connect(Settings(kubeconfig=tmp_path / "none"))


def test_configmap_store_creates_then_patches_and_keeps_other_keys(emulator: Emulator) -> None:
    """Emulator: kmock. The first save creates the ConfigMap, later saves patch one key and leave the rest."""
    store = ConfigMapStore(emulator.kube(), "inferno-system", "inferno-tuner")
    assert store.load() is None
    store.save({"version": 1, "keys": [{"key": "m/H100", "x": [1.0, 2.0]}]})
    assert store.load() == {"version": 1, "keys": [{"key": "m/H100", "x": [1.0, 2.0]}]}
    emulator.kube().patch_config_map(
        "inferno-system", "inferno-tuner", [{"op": "add", "path": "/data/notes", "value": "kept"}]
    )
    store.save({"version": 1, "keys": []})
    stored = emulator.get("inferno-system", "inferno-tuner", resource=CONFIGMAPS)
    assert stored["data"]["notes"] == "kept"
    assert json.loads(stored["data"][ConfigMapStore.KEY]) == {"version": 1, "keys": []}
    assert [r.method for r in emulator.writes()] == ["POST", "PATCH", "PATCH"]


def test_configmap_store_reports_a_corrupt_state_with_its_key(emulator: Emulator) -> None:
    """Emulator: kmock. Unreadable state is a ConfigError naming the ConfigMap and key, not an empty tuner."""
    emulator.add(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "tuner", "namespace": "ns"},
            "data": {ConfigMapStore.KEY: "{not json"},
        },
        resource=CONFIGMAPS,
    )
    with pytest.raises(ConfigError, match=r"ConfigMap ns/tuner: data.tuner-state.json: invalid JSON"):
        ConfigMapStore(emulator.kube(), "ns", "tuner").load()


def test_tuner_resumes_from_a_configmap_without_a_new_warm_up(emulator: Emulator) -> None:
    """Emulator: kmock. A tuner restored from the ConfigMap keeps its phase, estimates and update counts."""
    truth = make_queue_model("iteration", {"alpha": 7.0, "beta": 0.06, "gamma": 4e-5})
    key = ("llama-8b", "H100")
    tuner = EKFTuner(seeds={key: Seed({"alpha": 6.0, "beta": 0.05, "gamma": 5e-5})})
    for cycle in range(6):
        observations = []
        for i, (in_tokens, out_tokens, load) in enumerate(((256, 256, 0.2), (1024, 128, 0.5), (256, 256, 0.7))):
            workload = Workload(in_tokens, out_tokens)
            rate = load * truth.max_rate_rps(workload, 32, 320)
            m = truth.analyze(rate, workload, 32, 320)
            noise = 1 + 0.02 * math.sin(5 * cycle + i)
            observations.append(
                Observation(*key, rate, in_tokens, out_tokens, 32, 320, noise * m.ttft_ms, noise * m.itl_ms, f"p{i}")
            )
        tuner.update(observations)
    assert tuner.entries[key].phase == "tracking"
    store = ConfigMapStore(emulator.kube(), "inferno-system", "inferno-tuner")
    store.save(tuner.state())
    resumed = EKFTuner(seeds={key: Seed({"alpha": 6.0, "beta": 0.05, "gamma": 5e-5})}, state=store.load())
    assert resumed.entries[key].phase == "tracking"
    assert resumed.estimates() == tuner.estimates()
    assert resumed.state() == tuner.state()
