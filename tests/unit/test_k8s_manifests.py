"""The Kubernetes manifests under deploy/k8s, validated offline.

No cluster and no Docker engine run here, so each overlay is rendered with ``kubectl
kustomize`` (which needs neither) and what it renders is checked three ways: every built-in
object against the Kubernetes API schemas bundled by ``kubernetes-validate`` (strict, so a
misspelled field fails), KEDA's ScaledObjects against KEDA's own CRD schema, and the NATS
configs in the ConfigMaps with ``nats-server -t``, their ``$VAR`` references filled as the
pods' environment fills them. The rest checks the overlays' intent: one NATS node in dev,
three with volumes, R3 streams and a disruption budget in production, and the probes, grace
periods and scaling triggers the services rely on.
"""

from __future__ import annotations

import copy
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ferrisqueue.domain.subjects import EVENT_STREAM
from ferrisqueue.log.roles import render_authorization, roles
from ferrisqueue.log.topology import worker_consumer_name
from ferrisqueue.settings import Settings
from tests.support.kube import copy_with_example_secrets, render
from tests.support.natsconf import check_server_config, role_passwords

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("overlays/dev", "overlays/production", "examples/without-keda")
KEDA_CRD = ROOT / "tests" / "data" / "keda.sh_scaledobjects.yaml"

KUBERNETES_VERSION = "1.32.0"
"""The API the manifests are written for (kubectl 1.32 renders them here)."""

NATS_JETSTREAM_SCALER_KEYS = {
    "natsServerMonitoringEndpoint",
    "account",
    "accountID",
    "stream",
    "consumer",
    "lagThreshold",
    "activationLagThreshold",
    "useHttps",
}
"""The trigger metadata KEDA's nats-jetstream scaler reads (pkg/scalers/
nats_jetstream_scaler.go, v2.20); the CRD types metadata as any string map, so a misspelled
key would pass its schema and be silently ignored."""

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/k8s with the secret files a user creates from the ``.example``
    files (never committed), so that the dev overlay's secretGenerator finds them."""
    return copy_with_example_secrets(K8S, tmp_path_factory.mktemp("k8s") / "k8s")


@pytest.fixture(scope="module")
def rendered(tree: Path) -> dict[str, list[Obj]]:
    return {overlay: render(tree / overlay) for overlay in OVERLAYS}


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, rendered: dict[str, list[Obj]]) -> list[Obj]:
    objects: list[Obj] = rendered[request.param]
    return objects


@pytest.fixture
def dev(rendered: dict[str, list[Obj]]) -> list[Obj]:
    return rendered["overlays/dev"]


@pytest.fixture
def production(rendered: dict[str, list[Obj]]) -> list[Obj]:
    return rendered["overlays/production"]


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[Obj], kind: str, name: str) -> Obj:
    (found,) = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    return found


def workloads(objects: list[Obj]) -> Iterator[Obj]:
    """Every object with a pod template."""
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield o


def container(workload: Obj) -> Obj:
    """The workload's main container: the first (NATS has an exporter sidecar after it)."""
    first: Obj = workload["spec"]["template"]["spec"]["containers"][0]
    return first


def plain_env(workload: Obj, objects: list[Obj]) -> dict[str, str]:
    """A container's environment as the pod gets it: its ConfigMaps, then its own values
    (secret references and field references are left out)."""
    c = container(workload)
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            env.update(named(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
    return env


def workers(objects: list[Obj]) -> list[Obj]:
    return [
        d
        for d in of_kind(objects, "Deployment")
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"
    ]


def nats_config_text(objects: list[Obj], key: str = "nats.conf") -> str:
    statefulset = named(objects, "StatefulSet", "nats")
    (volume,) = [v for v in statefulset["spec"]["template"]["spec"]["volumes"] if "configMap" in v]
    text: str = named(objects, "ConfigMap", volume["configMap"]["name"])["data"][key]
    return text


# --- every object is valid -------------------------------------------------------------------


def test_every_overlay_renders_into_the_ferrisqueue_namespace(overlay: list[Obj]) -> None:
    kinds = {o["kind"] for o in overlay}

    assert {"Deployment", "StatefulSet", "Service", "ConfigMap", "Job"} <= kinds
    for o in overlay:
        if o["kind"] != "Namespace":
            assert o["metadata"]["namespace"] == "ferrisqueue", o["metadata"]["name"]


def test_every_builtin_object_passes_strict_kubernetes_validation(overlay: list[Obj]) -> None:
    errors = []
    for o in overlay:
        if o["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: checked against KEDA's schema below
        try:
            kubernetes_validate.validate(o, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{o['kind']}/{o['metadata']['name']}: {str(exc).splitlines()[0]}")

    assert not errors, "\n".join(errors)


def test_strict_validation_rejects_a_misspelled_field(production: list[Obj]) -> None:
    statefulset = copy.deepcopy(named(production, "StatefulSet", "nats"))
    statefulset["spec"]["replicaz"] = 3

    with pytest.raises(kubernetes_validate.ValidationError, match="replicaz"):
        kubernetes_validate.validate(statefulset, KUBERNETES_VERSION, strict=True)


def keda_validator() -> Any:
    """A validator of KEDA's ScaledObject schema that, like ``kubectl apply`` (strict field
    validation), refuses fields the schema does not declare."""
    crd = yaml.safe_load(KEDA_CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return jsonschema.Draft7Validator(closed(version["schema"]["openAPIV3Schema"]))


def closed(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` wherever it lists properties and does
    not keep unknown fields (what the API server prunes, strict validation rejects)."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: closed(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        result["additionalProperties"] = False
    return result


def test_scaled_objects_pass_kedas_crd_schema(production: list[Obj], dev: list[Obj]) -> None:
    validator = keda_validator()
    scaled = of_kind(production, "ScaledObject") + of_kind(dev, "ScaledObject")

    assert scaled
    for o in scaled:
        errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(o)]
        assert not errors, f"{o['metadata']['name']}: {errors}"


def test_kedas_schema_rejects_a_misspelled_field(production: list[Obj]) -> None:
    scaled = copy.deepcopy(of_kind(production, "ScaledObject")[0])
    scaled["spec"]["triggers"][0]["metdata"] = scaled["spec"]["triggers"][0].pop("metadata")

    assert not keda_validator().is_valid(scaled)


@pytest.mark.parametrize("overlay_name", ["overlays/dev", "overlays/production"])
def test_nats_config_of_every_pod_passes_nats_server_check(
    rendered: dict[str, list[Obj]], overlay_name: str, tmp_path: Path
) -> None:
    objects = rendered[overlay_name]
    statefulset = named(objects, "StatefulSet", "nats")
    config = tmp_path / "nats.conf"
    config.write_text(nats_config_text(objects))
    (tmp_path / "roles.conf").write_text(nats_config_text(objects, "roles.conf"))

    for ordinal in range(statefulset["spec"]["replicas"]):
        pod = f"{statefulset['metadata']['name']}-{ordinal}"
        (source,) = container(statefulset)["envFrom"]  # dev's is generated: name-<hash>
        assert source["secretRef"]["name"].startswith("nats-users")
        env = role_passwords()  # what the nats-users Secret holds
        for variable in container(statefulset)["env"]:
            field = variable.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            assert field in (None, "metadata.name"), variable
            env[variable["name"]] = pod if field else variable["value"]
        check_server_config(config, env)


# --- what the overlays are for ----------------------------------------------------------------


def test_production_runs_three_jetstream_nodes_with_volumes_and_a_budget(
    production: list[Obj],
) -> None:
    statefulset = named(production, "StatefulSet", "nats")
    headless = named(production, "Service", statefulset["spec"]["serviceName"])
    (budget,) = [
        p
        for p in of_kind(production, "PodDisruptionBudget")
        if p["spec"]["selector"] == statefulset["spec"]["selector"]
    ]
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container(statefulset)["volumeMounts"]}
    config = nats_config_text(production)

    assert statefulset["spec"]["replicas"] == 3
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert budget["spec"]["maxUnavailable"] == 1
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert re.search(rf"store_dir:\s*{mounts[claim['metadata']['name']]}/", config)
    routes = re.findall(r"nats://([\w.-]+):6222", config)
    assert routes == [f"nats-{i}.{headless['metadata']['name']}" for i in range(3)]
    assert re.search(r"^server_name:\s*\$SERVER_NAME$", config, re.MULTILINE)


def test_production_streams_are_r3_and_services_know_every_node(production: list[Obj]) -> None:
    for workload in of_kind(production, "Deployment") + of_kind(production, "Job"):
        if workload["metadata"]["name"] == "dashboard":
            continue  # talks to the gateway only
        env = plain_env(workload, production)
        assert env["FQ_STREAM_REPLICAS"] == "3", workload["metadata"]["name"]
        assert env["FQ_NATS_URL"].split(",") == [
            f"nats://nats-{i}.nats-headless:4222" for i in range(3)
        ]


def test_dev_runs_one_nats_node_and_r1_streams(dev: list[Obj]) -> None:
    statefulset = named(dev, "StatefulSet", "nats")

    assert statefulset["spec"]["replicas"] == 1
    assert "cluster {" not in nats_config_text(dev)
    assert plain_env(named(dev, "Job", "fq-init"), dev)["FQ_STREAM_REPLICAS"] == "1"


def test_nats_follows_the_official_charts_probes_and_lame_duck(overlay: list[Obj]) -> None:
    statefulset = named(overlay, "StatefulSet", "nats")
    nats = container(statefulset)
    config = nats_config_text(overlay)
    pid_file = re.search(r"^pid_file:\s*(\S+)", config, re.MULTILINE)
    lame_duck = re.search(r"^lame_duck_duration:\s*(\d+)s", config, re.MULTILINE)

    assert nats["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert nats["readinessProbe"]["httpGet"]["path"] == "/healthz?js-server-only=true"
    assert nats["livenessProbe"]["httpGet"]["path"] == "/healthz?js-enabled-only=true"
    assert pid_file and lame_duck
    assert nats["lifecycle"]["preStop"]["exec"]["command"] == [
        "nats-server",
        f"-sl=ldm={pid_file.group(1)}",
    ]
    assert statefulset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > int(
        lame_duck.group(1)
    )


def test_every_nats_pod_exports_jetstream_metrics_for_prometheus(overlay: list[Obj]) -> None:
    template = named(overlay, "StatefulSet", "nats")["spec"]["template"]
    (exporter,) = [
        c for c in template["spec"]["containers"] if "prometheus-nats-exporter" in c["image"]
    ]
    (port,) = exporter["ports"]

    assert "-jsz=all" in exporter["args"]
    assert exporter["args"][-1] == "http://localhost:8222"
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(port["containerPort"])


def test_worker_grace_period_exceeds_fq_shutdown_grace(overlay: list[Obj]) -> None:
    default = Settings.model_fields["shutdown_grace"].default

    assert workers(overlay)
    for worker in workers(overlay):
        grace = float(plain_env(worker, overlay).get("FQ_SHUTDOWN_GRACE", default))
        assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace


def test_each_queues_scaled_object_watches_its_consumer_which_fq_init_creates(
    production: list[Obj],
) -> None:
    init_queues = plain_env(named(production, "Job", "fq-init"), production)["FQ_WORKER_QUEUES"]
    scaled = {o["spec"]["scaleTargetRef"]["name"]: o for o in of_kind(production, "ScaledObject")}
    namespace = named(production, "StatefulSet", "nats")["metadata"]["namespace"]
    monitor = named(production, "Service", "nats")["spec"]["ports"]

    for worker in workers(production):
        queues = plain_env(worker, production)["FQ_WORKER_QUEUES"].split(",")
        (trigger,) = scaled[worker["metadata"]["name"]]["spec"]["triggers"]
        metadata = trigger["metadata"]
        assert len(queues) == 1, "one Deployment (and one backlog to scale on) per queue"
        assert trigger["type"] == "nats-jetstream"
        assert set(metadata) <= NATS_JETSTREAM_SCALER_KEYS
        assert metadata["stream"] == EVENT_STREAM
        assert metadata["consumer"] == worker_consumer_name(queues[0])
        assert metadata["natsServerMonitoringEndpoint"] == (
            f"nats.{namespace}.svc.cluster.local:"
            f"{next(p['port'] for p in monitor if p['name'] == 'monitor')}"
        )
        # A missing consumer makes the scaler fall back to the stream's last sequence
        # (scale to the maximum): fq-init creates it for every queue.
        assert queues[0] in init_queues.split(",")


def test_keda_may_read_the_nats_monitoring_port(production: list[Obj]) -> None:
    (policy,) = [
        p
        for p in of_kind(production, "NetworkPolicy")
        if p["spec"]["podSelector"].get("matchLabels") == {"app.kubernetes.io/name": "nats"}
    ]
    keda_rules = [
        rule
        for rule in policy["spec"]["ingress"]
        for peer in rule.get("from", [])
        if peer.get("namespaceSelector", {}).get("matchLabels")
        == {"kubernetes.io/metadata.name": "keda"}
    ]

    assert [port["port"] for rule in keda_rules for port in rule["ports"]] == [8222]


def test_without_keda_an_hpa_scales_each_worker_instead(
    rendered: dict[str, list[Obj]],
) -> None:
    objects = rendered["examples/without-keda"]
    scalers = of_kind(objects, "HorizontalPodAutoscaler")
    targets = {h["spec"]["scaleTargetRef"]["name"] for h in scalers}

    assert not of_kind(objects, "ScaledObject")
    assert targets == {w["metadata"]["name"] for w in workers(objects)}


def test_projector_and_scheduler_run_two_replicas(overlay: list[Obj]) -> None:
    assert named(overlay, "Deployment", "projector")["spec"]["replicas"] == 2
    assert named(overlay, "Deployment", "scheduler")["spec"]["replicas"] == 2


def test_fq_init_job_runs_fq_init(overlay: list[Obj]) -> None:
    assert container(named(overlay, "Job", "fq-init"))["command"] == ["fq", "init"]


def test_gateway_probes_its_readiness_and_health_routes(overlay: list[Obj]) -> None:
    gateway = container(named(overlay, "Deployment", "gateway"))

    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert plain_env(named(overlay, "Deployment", "gateway"), overlay)["FQ_GATEWAY_HOST"] == (
        "0.0.0.0"
    )


@pytest.mark.parametrize("name", ["worker-default", "projector", "scheduler"])
def test_services_without_http_api_are_probed_and_scraped_on_their_metrics_port(
    production: list[Obj], name: str
) -> None:
    deployment = named(production, "Deployment", name)
    fq = container(deployment)
    env = plain_env(deployment, production)
    (port,) = [p for p in fq["ports"] if p["name"] == "metrics"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]

    assert env["FQ_METRICS_HOST"] == "0.0.0.0"
    assert port["containerPort"] == int(env["FQ_METRICS_PORT"])
    for probe in ("readinessProbe", "livenessProbe"):
        assert fq[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == env["FQ_METRICS_PORT"]
    assert annotations["prometheus.io/path"] == "/metrics"


def test_dashboard_is_served_through_an_ingress(overlay: list[Obj]) -> None:
    dashboard = named(overlay, "Deployment", "dashboard")
    service = named(overlay, "Service", "dashboard")
    (rule,) = named(overlay, "Ingress", "dashboard")["spec"]["rules"]
    (path,) = rule["http"]["paths"]

    assert container(dashboard)["command"] == ["python", "-m", "streamlit_app"]
    assert path["backend"]["service"]["name"] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= (
        dashboard["spec"]["template"]["metadata"]["labels"].items()
    )


def test_every_pod_runs_as_non_root_with_a_read_only_root_and_requests(
    overlay: list[Obj],
) -> None:
    for workload in workloads(overlay):
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, name
        for c in pod["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, name
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= c["resources"]["requests"].keys(), name
            assert "memory" in c["resources"]["limits"], name


def test_no_secret_is_committed(production: list[Obj], dev: list[Obj], tree: Path) -> None:
    # Production references a Secret the operator creates; dev generates one from files the
    # user writes (this test wrote them from the .example files).
    dev_secrets = {s["metadata"]["name"].rsplit("-", 1)[0] for s in of_kind(dev, "Secret")}
    committed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "deploy/k8s"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()

    assert not of_kind(production, "Secret")
    assert dev_secrets == {"fq-secrets", "postgres", "nats-users"}
    assert not [f for f in committed if f.endswith(".env")]
    for example in tree.rglob("*.env.example"):
        for line in example.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                assert "CHANGE-ME" in line, f"{example.name}: {line}"


def test_default_deny_network_policy_covers_every_pod(overlay: list[Obj]) -> None:
    deny = [
        p
        for p in of_kind(overlay, "NetworkPolicy")
        if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")
    ]

    assert deny and deny[0]["spec"]["policyTypes"] == ["Ingress"]


def test_each_workload_connects_to_nats_as_its_own_role(overlay: list[Obj]) -> None:
    expected = {"gateway": "gateway", "projector": "projector", "scheduler": "scheduler"}
    expected |= {"worker-default": "worker-default"}
    for kind, name, user in [("Job", "fq-init", "admin")] + [
        ("Deployment", name, user) for name, user in expected.items()
    ]:
        env = {v["name"]: v for v in container(named(overlay, kind, name))["env"]}
        assert env["FQ_NATS_USER"]["value"] == user, name
        secret = env["FQ_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert secret["name"].startswith("nats-users"), name
        assert secret["key"] == "NATS_PASSWORD_" + user.upper().replace("-", "_")
        assert not secret.get("optional"), name
    assert (K8S / "base" / "roles.conf").read_text() == render_authorization(roles(["default"]))
