"""deploy/k8s/batch: the Job and CronJob run `inferd batch` as it parses, and
resume on retry (schemas: test_manifests.py validates every file there)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from inferd.server.batch import errors
from inferd.server.batch.cli import parser

BATCH = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "batch"


def load(name: str) -> dict[str, Any]:
    docs: list[dict[str, Any]] = list(yaml.safe_load_all((BATCH / name).read_text()))
    assert len(docs) == 1
    return docs[0]


def job_specs() -> dict[str, dict[str, Any]]:
    return {
        "job.yaml": load("job.yaml")["spec"],
        "cronjob.yaml": load("cronjob.yaml")["spec"]["jobTemplate"]["spec"],
    }


@pytest.mark.parametrize("name", ["job.yaml", "cronjob.yaml"])
def test_the_container_runs_inferd_batch_as_it_parses(name: str) -> None:
    pod = job_specs()[name]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["inferd"] and container["args"][0] == "batch"
    opts = parser().parse_args(container["args"][1:])
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[str(opts.model_repository)].get("readOnly") is True
    # The output folder outlives the pod (a retry resumes it), the summary lands in it.
    out_mount = next(m for p, m in mounts.items() if str(opts.output).startswith(p + "/"))
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "persistentVolumeClaim" in volumes[out_mount["name"]]
    assert str(opts.summary).startswith(str(opts.output) + "/")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize("name", ["job.yaml", "cronjob.yaml"])
def test_retries_only_what_a_retry_can_fix(name: str) -> None:
    spec = job_specs()[name]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert spec["backoffLimit"] >= 1
    (fail,) = [r for r in spec["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    codes = set(fail["onExitCodes"]["values"])
    assert codes == {errors.EXIT_TOO_MANY_ERRORS, errors.EXIT_USAGE, errors.EXIT_INPUT}
    assert errors.EXIT_SCORING not in codes  # an engine or server failure is retried


def test_each_nightly_job_resumes_its_own_folder() -> None:
    cron = load("cronjob.yaml")["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    (container,) = cron["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    opts = parser().parse_args(container["args"][1:])
    assert "$(JOB_NAME)" in str(opts.output)
    env = {e["name"]: e for e in container["env"]}
    assert env["JOB_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['job-name']"
