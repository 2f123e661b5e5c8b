"""Tests of the command line: validate, schema, version."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from inferno.cli import app, json_schema
from inferno.spec import SCHEMAS
from tests.conftest import REPO, SAMPLES

runner = CliRunner()


def test_validate_accepts_samples() -> None:
    """validate exits 0 on a bundled sample and summarises it."""
    result = runner.invoke(app, ["validate", str(SAMPLES / "small.yaml")])
    assert result.exit_code == 0, result.output
    assert "4 servers" in result.output


@pytest.mark.parametrize(
    "name",
    [
        "2025/small",
        "2025/large",
        "2026/small",
        "2026/large",
        "2025/small/system-data.json",
        "2026/small/system-data.json",
    ],
)
def test_validate_accepts_reference_sets(reference: Path, name: str) -> None:
    """validate exits 0 on every reference directory and system-data.json."""
    result = runner.invoke(app, ["validate", str(reference / name)])
    assert result.exit_code == 0, result.output


def test_validate_reports_bad_input_without_traceback(tmp_path: Path) -> None:
    """A bad file gives exit 1, each problem with its file, and no Python traceback."""
    data = yaml.safe_load((SAMPLES / "small.yaml").read_text())
    data["servers"][0]["model"] = "nobody"
    data["accelerators"][1]["cost"] = -3
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    proc = subprocess.run(
        [sys.executable, "-m", "inferno", "validate", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert f"{path}: servers[0].model: unknown model 'nobody'" in proc.stderr
    assert f"{path}: accelerators[1].cost: Input should be greater than or equal to 0 (got -3)" in proc.stderr
    assert "2 problem(s)" in proc.stderr


def test_validate_non_mapping_document(tmp_path: Path) -> None:
    """A YAML list at the top level is a clear error, not a crash."""
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert "expected a mapping" in result.output


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_schema_is_valid_json_schema(name: str) -> None:
    """Every exported schema is a valid draft 2020-12 JSON Schema."""
    result = runner.invoke(app, ["schema", name])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)


def test_schema_accepts_the_sample() -> None:
    """The system schema accepts our sample and rejects an unknown key."""
    validator = jsonschema.Draft202012Validator(json_schema("system"))
    data = yaml.safe_load((SAMPLES / "large.yaml").read_text())
    assert not list(validator.iter_errors(data))
    data["surprise"] = 1
    assert list(validator.iter_errors(data))


def test_unknown_schema_name_lists_choices() -> None:
    """An unknown schema name fails and lists the valid names."""
    result = runner.invoke(app, ["schema", "nonsense"])
    assert result.exit_code == 1
    assert "allocation-solution" in result.output


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_committed_schemas_do_not_drift(name: str) -> None:
    """config/schema holds exactly what the specs export (run `make schemas` after a spec change)."""
    committed = json.loads((REPO / "config" / "schema" / f"{name}.schema.json").read_text())
    assert committed == json_schema(name), f"config/schema/{name}.schema.json is stale: run `make schemas`"


def test_version_and_module_entry_point() -> None:
    """`python -m inferno version` prints the package version."""
    proc = subprocess.run([sys.executable, "-m", "inferno", "version"], capture_output=True, text=True, check=True)
    assert proc.stdout.startswith("inferno 0.")


def test_bad_setting_names_the_env_var() -> None:
    """An invalid INFERNO_LOG_LEVEL is reported by its env var name, exit 1."""
    result = runner.invoke(app, ["version"], env={"INFERNO_LOG_LEVEL": "loud"})
    assert result.exit_code == 1
    assert "INFERNO_LOG_LEVEL" in result.output
