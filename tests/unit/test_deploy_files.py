"""The deployment files agree with the code: docker-compose.yml, the nats-server configs under
nats/server/, and the JetStream definitions (package data, linked from nats/jetstream/).

No Docker engine runs here, so docker-compose.yml is checked by reading it: the services use
the documented entry points, and the three NATS nodes have configs that the pinned
nats-server accepts (``nats-server -t``) and that form one cluster. That every command is an
entry point the image's wheel installs, and every FQ_ variable a real setting, is
test_deploy_entry_points.py's job.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from ferrisqueue.log.roles import render_authorization, roles
from tests.support.natsconf import check_server_config, role_passwords

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SERVER_CONFIGS = sorted((ROOT / "nats" / "server").rglob("*.conf"))
JETSTREAM = ROOT / "nats" / "jetstream"
NATS_NODES = ("nats-1", "nats-2", "nats-3")
FQ_SERVICES = ("gateway", "worker", "projector", "scheduler", "dashboard")


def load_compose() -> dict[str, Any]:
    yaml = pytest.importorskip(
        "yaml", reason="PyYAML is not installed; add pyyaml to the dev extras in pyproject.toml"
    )
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = load_compose()["services"]
    return found


def conf_value(config: Path, key: str) -> str | None:
    """The value of a top-level ``key: value`` line in a nats-server config."""
    match = re.search(rf"^\s*{key}\s*[:=]\s*\"?([^\"\s#]+)", config.read_text(), re.MULTILINE)
    return match.group(1) if match else None


def node_config(service: dict[str, Any]) -> Path:
    """The host file a NATS service mounts as its config."""
    (mount,) = [v for v in service["volumes"] if v.split(":")[1] == "/etc/nats/nats-server.conf"]
    return ROOT / mount.split(":")[0]


def test_service_commands_are_the_documented_entry_points() -> None:
    found = services()

    assert found["gateway"]["command"] == ["python", "-m", "gateway"]
    assert found["worker"]["command"] == ["python", "-m", "worker"]
    assert found["projector"]["command"] == ["python", "-m", "projections"]
    assert found["scheduler"]["command"] == ["python", "-m", "scheduler"]
    dashboard = found["dashboard"]["command"]
    assert dashboard[:3] == ["python", "-m", "streamlit_app"]
    assert dashboard[dashboard.index("--server.address") + 1] == "0.0.0.0"


def test_ferrisqueue_services_reach_all_three_nats_nodes_and_postgres() -> None:
    found = services()

    for name in FQ_SERVICES:
        env = found[name]["environment"]
        assert env["FQ_NATS_URL"].split(",") == [f"nats://{n}:4222" for n in NATS_NODES]
        assert env["FQ_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert found["gateway"]["environment"]["FQ_GATEWAY_HOST"] == "0.0.0.0"
    assert found["dashboard"]["environment"]["FQ_GATEWAY_URL"] == "http://gateway:8000"
    assert found["postgres"]["image"] == "postgres:16"


def test_services_build_from_the_dockerfile() -> None:
    found = services()

    for name in FQ_SERVICES:
        assert found[name]["build"] == "."
        assert found[name]["image"] == found["gateway"]["image"]  # one image for all


def test_worker_is_scalable() -> None:
    worker = services()["worker"]

    assert "container_name" not in worker  # `--scale worker=N` needs generated names
    assert "ports" not in worker  # N containers cannot share one host port


def test_three_nats_nodes_run_the_pinned_server_with_their_own_config() -> None:
    found = services()

    for name in NATS_NODES:
        assert found[name]["image"] == "nats:2.15.1"
        assert node_config(found[name]) == ROOT / "nats" / "server" / "cluster" / f"{name}.conf"
        assert node_config(found[name]).is_file()


def test_nats_nodes_have_unique_server_names_and_form_one_cluster() -> None:
    configs = [node_config(services()[name]) for name in NATS_NODES]

    names = [conf_value(config, "server_name") for config in configs]
    assert names == list(NATS_NODES)
    for config in configs:
        text = config.read_text()
        assert re.search(r"^\s*name:\s*fq\s*$", text, re.MULTILINE), config
        routes = set(re.findall(r"nats-route://([\w-]+):6222", text))
        assert routes == set(NATS_NODES), config
        assert conf_value(config, "store_dir") == "/data/jetstream"


def test_single_node_profiles_differ_only_in_fsync_policy() -> None:
    server = ROOT / "nats" / "server"
    default, always = server / "single.conf", server / "single-sync-always.conf"

    assert conf_value(default, "sync_interval") is None
    assert conf_value(always, "sync_interval") == "always"
    for key in ("server_name", "port", "store_dir"):
        assert conf_value(default, key) == conf_value(always, key), key


def test_there_are_server_configs_to_check() -> None:
    names = {path.relative_to(ROOT / "nats" / "server").as_posix() for path in SERVER_CONFIGS}

    assert {"single.conf", "single-sync-always.conf"} <= names
    assert {f"cluster/{node}.conf" for node in NATS_NODES} <= names


@pytest.mark.parametrize("config", SERVER_CONFIGS, ids=lambda p: p.name)
def test_server_config_passes_nats_server_config_check(config: Path) -> None:
    check_server_config(config, role_passwords())


def jetstream_files() -> list[Path]:
    return sorted(JETSTREAM.rglob("*.json"))


@pytest.mark.parametrize("path", jetstream_files(), ids=lambda p: p.name)
def test_jetstream_definition_parses_and_is_named_after_its_file(path: Path) -> None:
    definition = json.loads(path.read_text())

    kind = path.relative_to(JETSTREAM).parts[0]
    if kind == "streams":
        assert definition["name"] == path.stem
    else:
        assert kind == "consumers"
        assert definition["durable_name"] == path.stem
        stream = path.parent.name
        assert (JETSTREAM / "streams" / f"{stream}.json").is_file(), f"no stream {stream}"


def test_jetstream_definitions_exist() -> None:
    names = {path.relative_to(JETSTREAM).as_posix() for path in jetstream_files()}

    assert "streams/FQ_EVENTS.json" in names
    assert "consumers/FQ_EVENTS/fq-worker-default.json" in names
    assert "consumers/FQ_EVENTS/fq-projector.json" in names


def test_nats_nodes_run_the_rendered_roles_with_passwords_compose_requires() -> None:
    """The cluster's users are the code's roles; every password is a required variable (no
    default), for the servers and for each service's own user."""
    roles_file = ROOT / "nats" / "server" / "cluster" / "roles.conf"
    assert roles_file.read_text() == render_authorization(roles(["default"]))
    found = services()
    for name in NATS_NODES:
        assert "include roles.conf" in node_config(found[name]).read_text()
        assert conf_value(node_config(found[name]), "http") == "127.0.0.1:8222"
        for variable, value in found[name]["environment"].items():
            assert value == f"${{{variable}:?set {variable} (docs/security.md)}}"
        assert set(found[name]["environment"]) == set(role_passwords())
    users = {"init": "admin", "gateway": "gateway", "projector": "projector"}
    users |= {"scheduler": "scheduler", "worker": "worker-default"}
    for name, user in users.items():
        env = found[name]["environment"]
        assert env["FQ_NATS_USER"] == user
        assert env["FQ_NATS_PASSWORD"].startswith(
            f"${{NATS_PASSWORD_{user.upper().replace('-', '_')}:?"
        )
    for name in ("gateway", "worker", "projector", "scheduler"):
        assert found[name]["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert not [p for p in found["nats-1"]["ports"] if "8222" in p]
