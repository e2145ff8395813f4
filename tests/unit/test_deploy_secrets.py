"""Deployments refuse empty or default secrets and hand each service the keys it needs:
docker-compose.yml takes them from required variables (``${VAR:?message}``: compose refuses
to start without them), the Kubernetes ``fq-init`` Job imports the operator's keys from the
Secret, the dashboard reads with its own key from it, and the dev overlay's example files
hold placeholders that FerrisQueue refuses."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ferrisqueue.domain.apikeys import WeakKey, checked_key
from ferrisqueue.settings import Settings
from tests.support.kube import copy_with_example_secrets, render

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
REQUIRED = re.compile(r"^\$\{(\w+):\?[^}]+\}$")

Obj = dict[str, Any]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def required_variable(value: str) -> str:
    """The variable of a ``${VAR:?message}`` value; fails for anything else."""
    match = REQUIRED.match(value)
    assert match, f"not a required variable: {value!r}"
    return match.group(1)


def test_compose_takes_every_secret_from_a_required_variable_and_holds_no_default() -> None:
    services = compose()["services"]
    env = {name: service.get("environment", {}) for name, service in services.items()}

    assert required_variable(env["postgres"]["POSTGRES_PASSWORD"]) == "POSTGRES_PASSWORD"
    assert required_variable(env["init"]["FQ_BOOTSTRAP_ADMIN_KEY"]) == "ADMIN_API_KEY"
    assert required_variable(env["init"]["FQ_BOOTSTRAP_DASHBOARD_KEY"]) == "DASHBOARD_API_KEY"
    assert required_variable(env["dashboard"]["FQ_DASHBOARD_API_KEY"]) == "DASHBOARD_API_KEY"
    grafana = env["grafana"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert required_variable(grafana) == "GRAFANA_ADMIN_PASSWORD"
    for name in ("gateway", "projector", "worker", "init", "dashboard"):
        url = env[name]["FQ_DATABASE_URL"]
        assert url.startswith("postgresql+psycopg://fq:${POSTGRES_PASSWORD:?"), name
    text = (ROOT / "docker-compose.yml").read_text()
    assert "fq:fq@" not in text and "POSTGRES_PASSWORD: fq" not in text


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_with_example_secrets(K8S, tmp_path_factory.mktemp("k8s") / "k8s")


@pytest.fixture(scope="module", params=["dev", "production"])
def overlay(request: pytest.FixtureRequest, tree: Path) -> list[Obj]:
    return render(tree / "overlays" / request.param)


def container_env(objects: list[Obj], kind: str, name: str) -> dict[str, Any]:
    [obj] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    [container] = obj["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("valueFrom", e.get("value")) for e in container["env"]}


def secret_ref(value: Any) -> tuple[str, str]:
    ref = value["secretKeyRef"]
    assert not ref.get("optional"), ref  # a missing key stops the pod from starting
    # The dev overlay's generated Secret carries a hash suffix (fq-secrets-<10 chars>).
    return re.sub(r"-[a-z0-9]{10}$", "", ref["name"]), ref["key"]


def test_fq_init_imports_both_keys_from_the_secret(overlay: list[Obj]) -> None:
    env = container_env(overlay, "Job", "fq-init")
    assert secret_ref(env["FQ_BOOTSTRAP_ADMIN_KEY"])[1] == "FQ_BOOTSTRAP_ADMIN_KEY"
    assert secret_ref(env["FQ_BOOTSTRAP_DASHBOARD_KEY"])[1] == "FQ_BOOTSTRAP_DASHBOARD_KEY"
    assert {secret_ref(env[n])[0] for n in env if n.startswith("FQ_BOOTSTRAP")} == {"fq-secrets"}


def test_the_dashboard_reads_with_the_key_fq_init_stored_for_it(overlay: list[Obj]) -> None:
    env = container_env(overlay, "Deployment", "dashboard")
    assert secret_ref(env["FQ_DASHBOARD_API_KEY"]) == ("fq-secrets", "FQ_BOOTSTRAP_DASHBOARD_KEY")
    assert "FQ_API_KEY" not in env  # never an operator's key


def test_the_dev_example_secrets_are_placeholders_that_fq_refuses(tree: Path) -> None:
    dev = render(tree / "overlays" / "dev")
    [secret] = [
        s for s in dev if s["kind"] == "Secret" and s["metadata"]["name"].startswith("fq-secrets")
    ]
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    for name in ("FQ_BOOTSTRAP_ADMIN_KEY", "FQ_BOOTSTRAP_DASHBOARD_KEY"):
        with pytest.raises(WeakKey):
            checked_key(data[name], what=name)
    with pytest.raises(ValueError, match="placeholder"):
        Settings(_env_file=None, database_url=data["FQ_DATABASE_URL"])  # type: ignore[call-arg]


def test_fq_init_exits_with_a_clear_error_on_the_example_placeholder(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FQ_")}
    env["FQ_BOOTSTRAP_ADMIN_KEY"] = "CHANGE-ME-run-fq-keys-generate"
    fq = Path(sys.executable).parent / "fq"
    refused = subprocess.run(
        [str(fq), "init"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1
    assert "FQ_BOOTSTRAP_ADMIN_KEY is not a FerrisQueue API key" in refused.stderr
