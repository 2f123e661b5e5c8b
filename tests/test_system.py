"""Tests of loading systems from disk and of the cross-reference checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from inferno.errors import ConfigError
from inferno.system import load_system
from tests.conftest import SAMPLES

REFERENCE_SETS = ["2025/small", "2025/large", "2026/small", "2026/large"]


@pytest.mark.parametrize("name", REFERENCE_SETS)
def test_reference_directories_load(reference: Path, name: str) -> None:
    """Each reference directory loads with all its servers, classes and perf rows."""
    loaded = load_system(reference / name)
    servers = json.loads((reference / name / "server-data.json").read_text())["servers"]
    models = json.loads((reference / name / "model-data.json").read_text())["models"]
    assert len(loaded.spec.server_data.servers) == len(servers)
    assert len(loaded.spec.model_data.models) == len(models)
    assert loaded.spec.capacity_data.count, "capacity must be read"


@pytest.mark.parametrize("name", ["2025/small", "2026/small"])
def test_reference_system_data_files_load(reference: Path, name: str) -> None:
    """The single-file system-data.json loads and matches its directory's servers."""
    whole = load_system(reference / name / "system-data.json").spec
    split = load_system(reference / name).spec
    assert whole.server_data == split.server_data
    assert whole.model_data == split.model_data


def test_2025_and_2026_perf_forms(reference: Path) -> None:
    """2025 rows carry decode/prefill parameters, 2026 rows perfParms."""
    old = load_system(reference / "2025/small").spec.model_data.models[0]
    new = load_system(reference / "2026/small").spec.model_data.models[0]
    assert old.decode_parms is not None and old.perf_parms is None
    assert new.perf_parms is not None and new.decode_parms is None
    assert (old.decode_parms.alpha, new.perf_parms.alpha) == (205.8, 205.8)


def test_directory_with_only_system_data(reference: Path, tmp_path: Path) -> None:
    """A directory holding only system-data.json is read through that file."""
    shutil.copy(reference / "2026/small/system-data.json", tmp_path / "system-data.json")
    assert len(load_system(tmp_path).spec.server_data.servers) == 15


@pytest.mark.parametrize("name", ["small.yaml", "large.yaml"])
def test_bundled_samples_load(name: str) -> None:
    """Our own samples load and the large one is heterogeneous (several card types)."""
    spec = load_system(SAMPLES / name).spec
    assert spec.server_data.servers
    types = {a.type for a in spec.accelerator_data.accelerators}
    assert len(types) >= (9 if name == "large.yaml" else 3)


def _sample() -> dict[str, object]:
    data = yaml.safe_load((SAMPLES / "small.yaml").read_text())
    assert isinstance(data, dict)
    return data


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_system(path)
    return [str(p) for p in info.value.problems]


def test_every_bad_field_is_named_with_its_file(tmp_path: Path) -> None:
    """A wrong type, an unknown key, a dangling model and a negative rate are all reported at once."""
    data = _sample()
    data["accelerators"][0]["multiplicity"] = "two"  # type: ignore[index]
    data["servers"][0]["colour"] = "blue"  # type: ignore[index]
    data["servers"][1]["model"] = "no-such-model"  # type: ignore[index]
    data["servers"][2]["currentAlloc"]["load"]["arrivalRate"] = -5  # type: ignore[index]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    problems = _problems(path)
    assert all(p.startswith(f"{path}: ") for p in problems), problems
    text = "\n".join(problems)
    assert "accelerators[0].multiplicity: Input should be a valid integer" in text
    assert "servers[0].colour: Extra inputs are not permitted" in text
    assert "servers[1].model: unknown model 'no-such-model'" in text
    assert "servers[2].currentAlloc.load.arrivalRate: Input should be greater than or equal to 0" in text
    assert len(problems) == 4


def test_cross_references_in_a_reference_directory(reference: Path, tmp_path: Path) -> None:
    """Dangling names and duplicates are reported against the file that holds them."""
    target = tmp_path / "sys"
    shutil.copytree(reference / "2025/small", target)
    (target / "system-data.json").unlink()
    models = json.loads((target / "model-data.json").read_text())
    models["models"][0]["acc"] = "TPUv9"
    (target / "model-data.json").write_text(json.dumps(models))
    caps = json.loads((target / "capacity-data.json").read_text())
    caps["count"].append({"type": "Quantum", "count": 3})
    (target / "capacity-data.json").write_text(json.dumps(caps))
    servers = json.loads((target / "server-data.json").read_text())
    servers["servers"][3]["class"] = "Platinum"
    servers["servers"].append(servers["servers"][0])
    (target / "server-data.json").write_text(json.dumps(servers))
    text = "\n".join(_problems(target))
    assert f"{target / 'model-data.json'}: models[0].acc: unknown accelerator 'TPUv9'" in text
    assert f"{target / 'capacity-data.json'}: count[4].type: capacity for unknown accelerator type 'Quantum'" in text
    assert f"{target / 'server-data.json'}: servers[3].class: unknown service class 'Platinum'" in text
    assert f"{target / 'server-data.json'}: servers[15].name: duplicate server name 'Premium-llama_13b'" in text


def test_cross_references_in_system_data_json(reference: Path, tmp_path: Path) -> None:
    """In system-data.json the path includes the system section."""
    data = json.loads((reference / "2026/small/system-data.json").read_text())
    data["system"]["serverData"]["servers"][0]["model"] = "ghost"
    path = tmp_path / "system-data.json"
    path.write_text(json.dumps(data))
    assert _problems(path) == [
        f"{path}: system.serverData.servers[0].model: unknown model 'ghost' (no performance data names it)"
    ]


@pytest.mark.parametrize("name", ["server-data.json", "model-data.json", "accelerator-data.json"])
def test_missing_reference_file_is_named(reference: Path, tmp_path: Path, name: str) -> None:
    """A missing file is one problem naming it, not a cascade of dangling names."""
    target = tmp_path / "sys"
    shutil.copytree(reference / "2026/large", target)
    (target / name).unlink()
    assert _problems(target) == [f"{target / name}: missing (a reference system directory needs this file)"]


def test_syntax_errors_name_the_line(tmp_path: Path) -> None:
    """Broken JSON and YAML are reported with file, line and column."""
    bad_json = tmp_path / "x.json"
    bad_json.write_text('{"accelerators": [\n  {"name": }\n]}')
    assert _problems(bad_json)[0].startswith(f"{bad_json}: line 2 column 12: invalid JSON")
    bad_yaml = tmp_path / "x.yaml"
    bad_yaml.write_text("accelerators:\n  - name: [unclosed\n")
    assert _problems(bad_yaml)[0].startswith(f"{bad_yaml}: line 3 column 1: invalid YAML")


def test_missing_path() -> None:
    """A path that does not exist is one clear problem."""
    assert _problems(Path("/nonexistent/system")) == ["/nonexistent/system: no such file or directory"]
