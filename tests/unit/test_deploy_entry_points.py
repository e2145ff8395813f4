"""Every deployment runs what the image holds, and configures only what the code reads.

The image installs the wheel and nothing else (Dockerfile), so the wheel built here from the
same build context stands in for it: no Docker engine runs here. For docker-compose.yml and for
every kustomize overlay under deploy/k8s/overlays/ (rendered offline with ``kubectl
kustomize``), every FerrisQueue container's command must be an entry point of that wheel
(``python -m X`` with ``X/__main__.py`` in its RECORD, or one of its console scripts), and every
``FQ_*`` variable set must be read by a settings class (``Settings``, or a plugin's own).
"""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from tests.support.deploy import (
    Container,
    compose_containers,
    configured_variables,
    entry_point_problems,
    image_defaults,
    known_settings,
    kubernetes_containers,
    unknown_settings,
)
from tests.support.kube import copy_with_example_secrets, render
from tests.support.wheel import REPO, Wheel

DOCKERFILE = REPO / "Dockerfile"
K8S = REPO / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").glob("*") if p.is_dir())
SERVICES = ("gateway", "worker", "scheduler", "projections", "streamlit_app")


@pytest.fixture(scope="module")
def settings_names(built_wheel: Wheel) -> frozenset[str]:
    return known_settings(built_wheel)


def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def assert_runs_and_settings(
    containers: list[Container], wheel: Wheel, settings_names: frozenset[str]
) -> None:
    assert containers, "no FerrisQueue container (image .../ferrisqueue:TAG) found"
    problems = {c.where: entry_point_problems(c.argv, wheel) for c in containers}
    assert {where: p for where, p in problems.items() if p} == {}
    unknown = {c.where: unknown_settings(c.variables, settings_names) for c in containers}
    assert {where: u for where, u in unknown.items() if u} == {}


# --- the wheel ---------------------------------------------------------------------------


def test_the_wheel_installs_every_service_and_the_cli(built_wheel: Wheel) -> None:
    for module in SERVICES:
        assert built_wheel.runs_module(module), f"the wheel has no {module}/__main__.py"
    assert built_wheel.console_scripts["fq"] == "ferrisqueue.cli.main:main"


def test_the_wheel_holds_every_package_and_every_file_of_it(built_wheel: Wheel) -> None:
    # What pyproject.toml includes, as the checkout has it: a folder left out of the build
    # context (.dockerignore) or package data left out of pyproject.toml shows up here.
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {
        p.name
        for p in REPO.iterdir()
        if (p / "__init__.py").is_file() and any(fnmatchcase(p.name, i) for i in include)
    }

    assert set(SERVICES) | {"ferrisqueue"} <= packages
    assert built_wheel.top_level_packages() == packages
    for package in packages:
        for path in (REPO / package).rglob("*"):
            if path.suffix in (".py", ".json") and "__pycache__" not in path.parts:
                file = path.relative_to(REPO).as_posix()
                assert file in built_wheel.files, f"{file} is not in the wheel"


# --- the image ---------------------------------------------------------------------------


def stages() -> list[str]:
    return re.split(r"^FROM\s", DOCKERFILE.read_text(), flags=re.MULTILINE)[1:]


def test_the_image_installs_the_wheel_built_in_an_earlier_stage_and_no_source() -> None:
    *builders, final = stages()

    assert builders, "the Dockerfile has one stage: the wheel must be built in another"
    assert any(re.search(r"^RUN pip wheel .*--no-deps", s, re.MULTILINE) for s in builders)
    copies = re.findall(r"^COPY\s+(.*)$", final, re.MULTILINE)
    assert copies, "the final stage copies nothing: where does the wheel come from?"
    for copy in copies:
        assert copy.startswith("--from="), f"the final stage copies {copy!r} from the context"
    assert re.search(r"^RUN pip install .*\.whl", final, re.MULTILINE)
    assert not re.search(r"pip install (-e|--editable)", final)


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    users = re.findall(r"^USER\s+(\S+)", stages()[-1], re.MULTILINE)

    assert users, "the image runs as root"
    # Numeric, so that Kubernetes' runAsNonRoot can verify it.
    assert users[-1].isdigit() and int(users[-1]) != 0


def test_the_image_default_command_is_an_entry_point(built_wheel: Wheel) -> None:
    entrypoint, cmd = image_defaults(DOCKERFILE)

    assert entry_point_problems(entrypoint + cmd, built_wheel) == []


# --- docker-compose.yml ------------------------------------------------------------------


def test_compose_runs_only_entry_points_of_the_wheel_and_sets_only_real_settings(
    built_wheel: Wheel, settings_names: frozenset[str]
) -> None:
    containers = compose_containers(compose(), DOCKERFILE)

    assert {c.where for c in containers} == {
        f"compose:{name}"
        for name in ("init", "projector", "scheduler", "gateway", "worker", "dashboard")
    }
    assert_runs_and_settings(containers, built_wheel, settings_names)
    (worker,) = [c for c in containers if c.where == "compose:worker"]
    assert {"FQ_NATS_URL", "FQ_STREAM_REPLICAS", "FQ_STORAGE_ROOT"} <= worker.variables


# --- Kubernetes --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/k8s with the secret files a user writes from the ``.example`` ones."""
    return copy_with_example_secrets(K8S, tmp_path_factory.mktemp("k8s") / "k8s")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_overlay_runs_only_entry_points_of_the_wheel_and_sets_only_real_settings(
    overlay: str, k8s_tree: Path, built_wheel: Wheel, settings_names: frozenset[str]
) -> None:
    objects = render(k8s_tree / "overlays" / overlay)

    containers = kubernetes_containers(objects, DOCKERFILE, overlay)

    assert_runs_and_settings(containers, built_wheel, settings_names)
    assert unknown_settings(configured_variables(objects), settings_names) == []


# --- the check itself --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "problems"),
    [
        (["python", "-m", "scheduler"], 0),
        (["/usr/local/bin/python3", "-m", "projections", "rebuild"], 0),
        (["fq", "init"], 0),
        (["sh", "-c", "set -e; fq init && exec python -m gateway"], 0),
        (["python", "-m", "streamlit", "run", "streamlit_app/app.py"], 1),
        (["python", "-m", "no_such_service"], 1),
        (["python", "streamlit_app/app.py"], 1),
        (["celery", "worker"], 1),
        (["sh", "-c", "fq init && python -m nope"], 1),
        ([], 1),
    ],
)
def test_the_entry_point_check_refuses_what_the_wheel_does_not_install(
    argv: list[str], problems: int, built_wheel: Wheel
) -> None:
    assert len(entry_point_problems(argv, built_wheel)) == problems


def test_the_settings_check_knows_settings_and_refuses_typos(
    settings_names: frozenset[str],
) -> None:
    assert {"FQ_NATS_URL", "FQ_DATABASE_URL", "FQ_STREAM_REPLICAS"} <= settings_names
    assert unknown_settings(["FQ_NATS_URL", "FQ_NATS_URLS"], settings_names) == ["FQ_NATS_URLS"]


KUSTOMIZATION = """
resources: [app.yaml]
configMapGenerator:
  - name: fq-config
    literals: [FQ_NATS_URL=nats://nats:4222, FQ_WORKER_QUEUES=default]
"""

APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: gateway}
spec:
  selector: {matchLabels: {app: gateway}}
  template:
    metadata: {labels: {app: gateway}}
    spec:
      initContainers:
        - {name: init, image: ghcr.io/example/ferrisqueue:0.1.0, command: [fq], args: [init]}
      containers:
        - name: gateway
          image: ferrisqueue:dev
          envFrom: [{configMapRef: {name: fq-config}}]
          env: [{name: FQ_GATEWAY_HOST, value: 0.0.0.0}, {name: OTHER, value: x}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: verify}
spec:
  schedule: "@daily"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
            - {name: verify, image: ferrisqueue:dev, args: [python, -m, projections, verify]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: nats}
spec:
  serviceName: nats
  selector: {matchLabels: {app: nats}}
  template:
    metadata: {labels: {app: nats}}
    spec:
      containers: [{name: nats, image: "nats:2.15.1", command: [nats-server]}]
"""


def test_the_kubernetes_reader_finds_commands_and_variables_in_a_rendered_overlay(
    tmp_path: Path,
) -> None:
    (tmp_path / "kustomization.yaml").write_text(KUSTOMIZATION)
    (tmp_path / "app.yaml").write_text(APP)

    found = kubernetes_containers(render(tmp_path), DOCKERFILE, "t")

    fq_config = frozenset({"FQ_NATS_URL", "FQ_WORKER_QUEUES"})
    assert sorted(found, key=lambda c: c.where) == [
        Container(
            "t:CronJob/verify/verify", ["python", "-m", "projections", "verify"], frozenset()
        ),
        Container(
            "t:Deployment/gateway/gateway",
            ["python", "-m", "gateway"],  # the image's CMD
            fq_config | {"FQ_GATEWAY_HOST"},
        ),
        Container("t:Deployment/gateway/init", ["fq", "init"], frozenset()),
    ]
