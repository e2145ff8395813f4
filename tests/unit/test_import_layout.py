"""The import layout: which package may import which.

* ``import nats`` is the nats-py client, never the repository's ``nats/`` config folder;
* the shared kernel ``ferrisqueue`` imports no service;
* services (gateway, worker, projections, scheduler, streamlit_app) never import each other:
  they talk through the event log and the HTTP API only;
* inside the kernel the layers point one way (:data:`LAYER_RULES`): the pure ``domain``
  imports no adapter, store, settings, CLI or I/O library; the ``store`` and the ``log``
  adapter do not import each other; nothing but the CLI imports the CLI;
* only the NATS adapter imports nats-py (:data:`NATS_ADAPTERS`);
* only ``ferrisqueue/otel.py`` imports OpenTelemetry (the optional ``[otel]`` extra).

Checked statically with :mod:`ast`, so a forbidden import in a branch that never runs (or in a
module nobody imports yet) is caught too.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KERNEL = "ferrisqueue"
SERVICES = ("gateway", "worker", "projections", "scheduler", "streamlit_app")


def test_repo_root_is_found() -> None:
    assert (REPO / "pyproject.toml").is_file()
    assert (REPO / KERNEL / "__init__.py").is_file()


# --- nats ----------------------------------------------------------------------------------


def test_import_nats_is_the_nats_py_client() -> None:
    import nats

    assert nats.__file__ is not None
    origin = Path(nats.__file__).resolve()
    assert "site-packages" in origin.parts
    assert not origin.is_relative_to(REPO / "nats")
    assert callable(nats.connect)


def test_the_repos_nats_folder_is_not_a_package() -> None:
    folder = REPO / "nats"

    assert folder.is_dir()  # it exists: server configs and JetStream definitions live there
    assert not (folder / "__init__.py").exists()
    assert not list(folder.rglob("*.py"))  # nothing in it could shadow a nats-py module


def test_nats_submodules_resolve_to_the_client_too() -> None:
    spec = importlib.util.find_spec("nats.js")

    assert spec is not None and spec.origin is not None
    assert "site-packages" in Path(spec.origin).parts


# --- Static import graph -------------------------------------------------------------------


def _python_files(package: str) -> list[Path]:
    return sorted(p for p in (REPO / package).rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports, absolute, with its line: relative imports resolved,
    ``importlib.import_module("x")`` / ``__import__("x")`` with a literal name included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            yield node.lineno, name
            for alias in node.names:  # `from x import y` may import the module x.y
                yield node.lineno, f"{name}.{alias.name}"
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (
                    isinstance(node.func, ast.Name)
                    and node.func.id in ("import_module", "__import__")
                )
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def _forbidden_imports(package: str, forbidden: set[str]) -> list[str]:
    """Where files under ``package`` (a folder) import a forbidden name: a module, or a
    package and everything under it."""
    found = []
    for path in _python_files(package):
        for line, name in _imported_modules(path):
            if any(name == f or name.startswith(f"{f}.") for f in forbidden):
                found.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    return sorted(set(found))


def test_the_import_scanner_sees_imports() -> None:
    """The scanner itself: it must find every form of import, or the tests below prove nothing."""
    sample = REPO / KERNEL / "domain" / "fold.py"
    names = {name for _, name in _imported_modules(sample)}
    assert {"ferrisqueue.domain.events", "ferrisqueue.domain.states", "dataclasses"} <= names


def test_the_import_scanner_resolves_relative_and_dynamic_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    pkg = tmp_path / "gateway" / "routes"
    pkg.mkdir(parents=True)
    (tmp_path / "gateway" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from . import jobs\n")
    (pkg / "jobs.py").write_text(
        "import worker.registry\n"
        "from .. import deps\n"
        "from ..app import create_app\n"
        "import importlib\n"
        "def f():\n"
        "    from projections import jobs\n"
        "    importlib.import_module('scheduler.main')\n"
        "    __import__('streamlit_app')\n"
    )

    init_names = {n for _, n in _imported_modules(pkg / "__init__.py")}
    names = {n for _, n in _imported_modules(pkg / "jobs.py")}

    assert "gateway.routes.jobs" in init_names
    assert {"worker.registry", "gateway.deps", "gateway.app", "projections"} <= names
    assert {"scheduler.main", "streamlit_app"} <= names
    assert _forbidden_imports(
        "gateway", {"worker", "projections", "scheduler", "streamlit_app"}
    ) == [
        "gateway/routes/jobs.py:1 imports worker.registry",
        "gateway/routes/jobs.py:6 imports projections",
        "gateway/routes/jobs.py:6 imports projections.jobs",
        "gateway/routes/jobs.py:7 imports scheduler.main",
        "gateway/routes/jobs.py:8 imports streamlit_app",
    ]


def test_the_kernel_has_python_files() -> None:
    files = _python_files(KERNEL)

    assert REPO / KERNEL / "domain" / "fold.py" in files
    assert len(files) > 5


def test_the_kernel_imports_no_service() -> None:
    assert _forbidden_imports(KERNEL, set(SERVICES)) == []


@pytest.mark.parametrize("service", SERVICES)
def test_services_do_not_import_each_other(service: str) -> None:
    others = set(SERVICES) - {service}

    assert _forbidden_imports(service, others) == []


# --- The log port ---------------------------------------------------------------------------

NATS_ADAPTERS = {
    "ferrisqueue/log/natsconn.py",  # connecting: reconnect for ever, the server version check
    "ferrisqueue/log/natslog.py",  # the log port on JetStream (NatsLog)
    "ferrisqueue/log/puller.py",  # pull requests and deliveries (NatsDelivery)
    "ferrisqueue/log/pubacks.py",  # publish acks through one inbox per connection
    "ferrisqueue/log/snapshots.py",  # stream backup/restore: the snapshot API's chunk protocol
}
"""The only modules that may import nats-py: everything else talks to the log through the
port (ferrisqueue/log/port.py, ferrisqueue/log/eventlog.py), so it runs on the in-memory log
too."""


def test_only_the_nats_adapter_imports_nats_py() -> None:
    importers = {
        str(path.relative_to(REPO))
        for package in (KERNEL, *SERVICES)
        for path in _python_files(package)
        if any(name.split(".")[0] == "nats" for _, name in _imported_modules(path))
    }

    assert importers == NATS_ADAPTERS


def test_only_the_otel_module_imports_opentelemetry() -> None:
    importers = {
        str(path.relative_to(REPO))
        for package in (KERNEL, *SERVICES)
        for path in _python_files(package)
        if any(name.split(".")[0] == "opentelemetry" for _, name in _imported_modules(path))
    }

    assert importers == {"ferrisqueue/otel.py"}


# --- Layers inside the kernel --------------------------------------------------------------

LAYER_RULES: dict[str, set[str]] = {
    "ferrisqueue/domain": {
        "ferrisqueue.log",
        "ferrisqueue.store",
        "ferrisqueue.cli",
        "ferrisqueue.settings",
        "nats",
        "sqlalchemy",
        "sqlmodel",
        "fastapi",
        "httpx",
        "ferrisqueue.tracing",
        "ferrisqueue.otel",
        "opentelemetry",
    },
    "ferrisqueue/jobtypes": {"ferrisqueue.log", "ferrisqueue.store", "ferrisqueue.cli", "nats"},
    "ferrisqueue/store": {"ferrisqueue.log", "ferrisqueue.cli", "nats"},
    "ferrisqueue/log": {"ferrisqueue.store", "ferrisqueue.cli", "sqlalchemy", "sqlmodel"},
}
"""For each kernel layer (a folder), what it must not import: a name forbids that module or
package and everything under it."""


@pytest.mark.parametrize("layer", sorted(LAYER_RULES))
def test_kernel_layers_point_one_way(layer: str) -> None:
    assert (REPO / layer).is_dir()
    assert _forbidden_imports(layer, LAYER_RULES[layer]) == []


@pytest.mark.parametrize("folder", [*SERVICES, *sorted(LAYER_RULES)])
def test_only_the_cli_imports_the_cli(folder: str) -> None:
    assert _forbidden_imports(folder, {"ferrisqueue.cli"}) == []
