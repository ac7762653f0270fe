"""The manifests in docs/kubernetes.md are valid Kubernetes resources (kubernetes-validate,
strict: unknown fields are errors), and the Job runs the sync the docs describe."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as k8s

DOC = Path(__file__).parents[1] / "docs" / "kubernetes.md"


def _resources() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    return [doc for block in blocks for doc in yaml.safe_load_all(block) if doc]


def test_the_manifests_are_valid() -> None:
    resources = _resources()
    assert {r["kind"] for r in resources} == {"ConfigMap", "Secret", "Job", "CronJob"}
    version = k8s.latest_version()
    for resource in resources:
        k8s.validate(resource, version, strict=True)  # raises on any schema error
    job = next(r for r in resources if r["kind"] == "Job")
    with pytest.raises(k8s.ValidationError):  # the check does bite: a misspelt field
        k8s.validate({**job, "spec": {**job["spec"], "completionMod": "Indexed"}}, version,
                     strict=True)


@pytest.mark.parametrize("kind", ["Job", "CronJob"])
def test_the_jobs_are_indexed_and_run_a_sharded_sync(kind: str) -> None:
    resource = next(r for r in _resources() if r["kind"] == kind)
    job = resource["spec"] if kind == "Job" else resource["spec"]["jobTemplate"]["spec"]
    assert job["completionMode"] == "Indexed"
    args = job["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["sync", "--shard", str(job["completions"])]


def test_the_configuration_is_a_valid_sync_configuration(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    from occystrap_core.sync.config import parse

    monkeypatch.setenv("MIRROR_PASSWORD", "x")
    config_map = next(r for r in _resources() if r["kind"] == "ConfigMap")
    config = parse(config_map["data"]["sync.yaml"], "sync.yaml")
    assert config.sources and config.registries["mirror.internal:5000"].username == "robot"
