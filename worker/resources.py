"""Resources a worker opens once at start and closes at stop, reached by handlers through
their :class:`~worker.context.JobContext`.

A connection pool, an HTTP client, a loaded model: things too costly to open per job and
wrong to keep in module globals (a global is shared by every test and every worker of a
process, and nobody closes it). A middleware opens them in
:meth:`~worker.middleware.Middleware.on_worker_start`, adds them here, and closes them in
:meth:`~worker.middleware.Middleware.on_worker_stop`; a handler asks for one by its type::

    pool = ctx.resource(Pool)

Resources are keyed by type, so the lookup is typed (``ctx.resource(Pool)`` is a ``Pool`` to
mypy). Two resources of one type need two types: wrap one (``class ReportsDb(Pool)``) or
register it under a subclass or protocol with ``add(resource, as_type=...)``.
"""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")


class MissingResource(LookupError):
    """No resource of the asked type was opened on this worker (is its plugin installed and
    its middleware registered?). A handler's lookup failing fails the attempt like any other
    error: another worker may have the resource."""


class Resources:
    """The resources of one worker, by type. Filled while the worker starts; handlers read."""

    def __init__(self) -> None:
        self._by_type: dict[type[Any], Any] = {}

    def add(self, resource: T, *, as_type: type[T] | None = None) -> T:
        """Make ``resource`` reachable as ``as_type`` (default: its own type); returns it.

        A type is held once: adding a second resource of it is a :class:`ValueError`, since
        which of the two a handler got would depend on plugin load order."""
        kind = type(resource) if as_type is None else as_type
        if kind in self._by_type:
            raise ValueError(f"a resource of type {_name(kind)} is already open on this worker")
        self._by_type[kind] = resource
        return resource

    def get(self, kind: type[T]) -> T:
        """The resource registered as ``kind``; :class:`MissingResource` if there is none."""
        try:
            resource: T = self._by_type[kind]
        except KeyError:
            have = ", ".join(sorted(_name(k) for k in self._by_type)) or "none"
            raise MissingResource(
                f"no resource of type {_name(kind)} on this worker (open: {have})"
            ) from None
        return resource

    def remove(self, kind: type[Any]) -> None:
        """Forget the resource registered as ``kind`` (a stop hook that closed it)."""
        self._by_type.pop(kind, None)

    def __contains__(self, kind: type[Any]) -> bool:
        return kind in self._by_type

    def __len__(self) -> int:
        return len(self._by_type)


def _name(kind: type[Any]) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"
