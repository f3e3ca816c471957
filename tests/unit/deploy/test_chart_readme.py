"""charts/kaito/README.md is generated from the `# --` comments of values.yaml and stays fresh;
a value nobody described is refused."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "hack" / "chart_readme.py"


def load() -> object:
    spec = importlib.util.spec_from_file_location("chart_readme", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_readme_is_fresh() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_every_value_is_documented_and_listed() -> None:
    readme = (REPO / "charts" / "kaito" / "README.md").read_text()
    for key in (
        "replicaCount",
        "imagePullSecrets",
        "nodeSelector",
        "tolerations",
        "affinity",
        "podAnnotations",
        "podLabels",
        "priorityClassName",
        "nodeProvisionerController.resources",
    ):
        assert f"| `{key}` |" in readme, key


def test_an_undocumented_value_is_refused() -> None:
    mod = load()
    text = "# -- documented\na: 1\nb:\n  # -- inner\n  c: 2\n  d: 3\n"
    docs = mod.documented(text)  # type: ignore[attr-defined]
    assert docs == {"a": "documented", "b.c": "inner"}
    import yaml

    leaves = mod.leaves(yaml.safe_load(text))  # type: ignore[attr-defined]
    assert leaves == ["a", "b.c", "b.d"]


def test_the_schema_names_every_top_level_value() -> None:
    import yaml

    schema = json.loads((REPO / "charts" / "kaito" / "values.schema.json").read_text())
    values = yaml.safe_load((REPO / "charts" / "kaito" / "values.yaml").read_text())
    assert schema["additionalProperties"] is False
    missing = sorted(set(values) - set(schema["properties"]))
    assert not missing, f"values.yaml keys the schema would refuse: {missing}"
    nested = values["nodeProvisionerController"]
    assert not set(nested) - set(schema["properties"]["nodeProvisionerController"]["properties"])
