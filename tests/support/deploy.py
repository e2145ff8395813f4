"""What a deployment asks the FerrisQueue image to run, read without a container engine.

A deployment (docker-compose.yml, or a kustomize overlay rendered with ``kubectl kustomize``,
see :mod:`tests.support.kube`) is reduced to its FerrisQueue containers: each one's argv
(entrypoint/command and command/args, the image's own ENTRYPOINT and CMD where it sets none)
and the names of the ``FQ_*`` variables it gets. :func:`entry_point_problems` and
:func:`unknown_settings` then say what the built wheel would not run and which variables no
settings class reads.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings

from tests.support.wheel import Wheel

IMAGE_NAME = "ferrisqueue"
"""The image's repository name: containers of any other image (nats, postgres) are not ours."""

SHELLS = {"sh", "bash"}
PYTHON = re.compile(r"^python(3(\.\d+)?)?$")
PREFIX = "FQ_"


@dataclass(frozen=True)
class Container:
    """One FerrisQueue container of a deployment."""

    where: str
    """``compose:worker``, ``dev:Deployment/fq-worker-default/worker``, ..."""
    argv: list[str]
    variables: frozenset[str]
    """The names of the FQ_ variables it is given."""


def image_defaults(dockerfile: Path) -> tuple[list[str], list[str]]:
    """The final stage's ENTRYPOINT and CMD (exec form), ``[]`` where it sets none."""
    final = re.split(r"^FROM\s", dockerfile.read_text(), flags=re.MULTILINE)[-1]

    def exec_form(instruction: str) -> list[str]:
        found = re.findall(rf"^{instruction}\s+(\[.*\])\s*$", final, re.MULTILINE)
        return list(json.loads(found[-1])) if found else []

    return exec_form("ENTRYPOINT"), exec_form("CMD")


def is_ours(image: str | None) -> bool:
    """Whether ``image`` (``registry/path/ferrisqueue:tag``) is the FerrisQueue image."""
    if not image:
        return False
    name = image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]
    return name == IMAGE_NAME


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):  # compose's shell form
        return shlex.split(value)
    return [str(v) for v in value]


def compose_containers(compose: dict[str, Any], dockerfile: Path) -> list[Container]:
    """The services of ``compose`` that run the image built from ``dockerfile``."""
    entrypoint, cmd = image_defaults(dockerfile)
    found = []
    for name, service in compose["services"].items():
        if "build" not in service and not is_ours(service.get("image")):
            continue
        # `entrypoint` replaces the image's ENTRYPOINT and drops its CMD; `command` replaces CMD.
        if "entrypoint" in service:
            argv = _as_list(service["entrypoint"]) + _as_list(service.get("command"))
        else:
            argv = entrypoint + (_as_list(service["command"]) if "command" in service else cmd)
        environment = service.get("environment") or {}
        names = (
            environment if isinstance(environment, dict) else [e.split("=")[0] for e in environment]
        )
        found.append(Container(f"compose:{name}", argv, _fq(names)))
    return found


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Pod":
        return spec
    if obj.get("kind") == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    template: dict[str, Any] | None = spec.get("template", {}).get("spec")
    return template


def kubernetes_containers(
    objects: list[dict[str, Any]], dockerfile: Path, overlay: str
) -> list[Container]:
    """The FerrisQueue containers (init containers too) of every workload in ``objects``."""
    entrypoint, cmd = image_defaults(dockerfile)
    keys = {
        (obj["kind"], obj["metadata"]["name"]): [
            *(obj.get("data") or {}),
            *(obj.get("stringData") or {}),
        ]
        for obj in objects
        if obj.get("kind") in ("ConfigMap", "Secret")
    }
    found = []
    for obj in objects:
        pod = _pod_spec(obj)
        if pod is None:
            continue
        for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            if not is_ours(container.get("image")):
                continue
            # `command` replaces the image's ENTRYPOINT, `args` its CMD.
            command = _as_list(container.get("command")) or entrypoint
            args = _as_list(container.get("args")) if "args" in container else []
            if "command" not in container and "args" not in container:
                args = cmd
            names = [e["name"] for e in container.get("env", [])]
            for source in container.get("envFrom", []):
                for kind, ref in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if ref in source:
                        referenced = keys.get((kind, source[ref]["name"]), [])
                        names += [source.get("prefix", "") + key for key in referenced]
            where = f"{overlay}:{obj['kind']}/{obj['metadata']['name']}/{container['name']}"
            found.append(Container(where, [*command, *args], _fq(names)))
    return found


def configured_variables(objects: list[dict[str, Any]]) -> frozenset[str]:
    """Every FQ_ key of every ConfigMap and Secret, used by a container or not."""
    names: list[str] = []
    for obj in objects:
        if obj.get("kind") in ("ConfigMap", "Secret"):
            names += [*(obj.get("data") or {}), *(obj.get("stringData") or {})]
    return _fq(names)


def _fq(names: Iterable[str]) -> frozenset[str]:
    return frozenset(name for name in names if name.startswith(PREFIX))


def commands(argv: list[str]) -> list[list[str]]:
    """The commands ``argv`` runs: itself, or each command of an ``sh -c`` script."""
    if len(argv) >= 3 and Path(argv[0]).name in SHELLS and argv[1] == "-c":
        found = []
        for part in re.split(r"&&|\|\||[;\n|]", argv[2]):
            words = shlex.split(part)
            while words and (words[0] == "exec" or re.match(r"^\w+=", words[0])):
                words = words[1:]
            if words and words[0] != "set":
                found.append(words)
        return found
    return [argv]


def entry_point_problems(argv: list[str], wheel: Wheel) -> list[str]:
    """Why the wheel would not run ``argv`` (nothing when every command is its entry point)."""
    if not argv:
        return ["no command at all (the image has neither ENTRYPOINT nor CMD)"]
    problems = []
    for words in commands(argv):
        program = Path(words[0]).name
        if PYTHON.match(program):
            if words[1:2] != ["-m"] or len(words) < 3:
                problems.append(f"{shlex.join(words)}: python without -m MODULE")
            elif not wheel.runs_module(words[2]):
                problems.append(f"{shlex.join(words)}: the wheel has no {words[2]}/__main__.py")
        elif program not in wheel.console_scripts:
            problems.append(f"{shlex.join(words)}: {program} is not a console script of the wheel")
    return problems


def known_settings(wheel: Wheel) -> frozenset[str]:
    """Every variable a settings class of the wheel reads: ``FQ_<FIELD>`` of
    :class:`~ferrisqueue.settings.Settings`, and each plugin settings class's own prefix.

    The classes are found by importing every module of the wheel's packages (importing has no
    side effects there), except ``__main__`` modules and the dashboard's pages, which are
    Streamlit scripts.
    """
    packages = wheel.top_level_packages() - {"streamlit_app"}
    for file in sorted(wheel.files):
        if file.endswith(".py") and file.split("/")[0] in packages:
            module = file.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
            if not module.endswith("__main__"):
                importlib.import_module(module)
    names: set[str] = set()
    for cls in _subclasses(BaseSettings):
        prefix = cls.model_config.get("env_prefix") or ""
        if cls.__module__.split(".")[0] in packages and prefix.startswith(PREFIX):
            for name, field in cls.model_fields.items():
                alias = field.validation_alias if isinstance(field.validation_alias, str) else None
                names.add((alias or f"{prefix}{name}").upper())
    return frozenset(names)


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def unknown_settings(variables: Iterable[str], known: frozenset[str]) -> list[str]:
    return sorted(set(variables) - known)
