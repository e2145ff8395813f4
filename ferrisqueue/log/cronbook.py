"""The book of periodic schedules: definitions in a KV bucket, firing left to the server.

Two places hold a schedule, and this module keeps them in step:

* the **definition** (:class:`~ferrisqueue.domain.cron.CronDefinition`, JSON) in the
  key-value bucket ``FQ_CRON`` under its name: what the gateway lists and what the scheduler
  reads on each tick (so a paused or deleted schedule creates no job even from a tick
  already fired);
* the **server schedule**: one message on ``fq.cron.<name>`` in ``FQ_SCHEDULES`` with the
  ``Nats-Schedule`` header. The nats-server fires it, durably and without any of our
  processes, as a message on ``fq.tick.<name>`` (with a TTL, so ticks do not pile up).

Re-publishing a schedule restarts its interval, so it is published only when it is missing
or differs, and guarded with ``Nats-Expected-Last-Subject-Sequence``: of two writers that
both find it missing, one publishes and the other sees the first one's message. Pausing or
deleting purges the schedule's subject (which cancels it). :meth:`CronBook.reconcile`
repairs whatever a crash between the two writes left behind.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timedelta

from pydantic import ValidationError

from ferrisqueue.domain.cron import (
    CronDefinition,
    CronSpec,
    InvalidSchedule,
    Source,
    UnknownSchedule,
    interval_seconds,
    next_cron_fires,
    next_interval_fires,
    round_to_second,
)
from ferrisqueue.domain.events import ACTOR_HEADER, encode_event, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.jobbuilder import build_job
from ferrisqueue.domain.subjects import SCHEDULE_STREAM, cron_subject, tick_subject
from ferrisqueue.errors import (
    ConcurrentChange,
    NatsUnavailable,
    PayloadTooLarge,
    PublishOutcomeUnknown,
    PublishRejected,
)
from ferrisqueue.jobtypes import JobType, load_job_types
from ferrisqueue.log.port import EXPECTED_LAST_SUBJECT_SEQ, LogPort, StoredMessage
from ferrisqueue.settings import Settings

log = logging.getLogger(__name__)

BUCKET = "FQ_CRON"
KV_STREAM = f"KV_{BUCKET}"
_KV_PREFIX = f"$KV.{BUCKET}."
_KV_OP = "KV-Operation"

# Headers of the server schedule that define it (the server adds others, e.g. Nats-Rollup).
_SCHEDULE_HEADERS = (
    "Nats-Schedule",
    "Nats-Schedule-Target",
    "Nats-Schedule-Time-Zone",
    "Nats-Schedule-TTL",
)
_NEXT_HEADER = "Nats-Schedule-Next"
# The server's reasons for refusing a schedule: pattern, per-message TTL, time zone.
_BAD_SCHEDULE = (10189, 10191, 10223)
_TRIES = 5


class CronBook:
    """Define, list, pause, resume and delete periodic schedules."""

    def __init__(
        self,
        log: LogPort,
        *,
        tick_ttl: int = 120,
        max_event_bytes: int = 512 * 1024,
        job_types: Mapping[str, JobType] | None = None,
    ) -> None:
        """``log``: where the bucket and the schedules are (the KV bucket is a stream, read
        and written with its subjects and ``Nats-Expected-Last-Subject-Sequence``, as
        nats-py's KV client does); ``tick_ttl``: seconds a fired tick stays in
        ``FQ_SCHEDULES`` (at least 1); ``max_event_bytes``: the largest ``submitted`` event
        a tick may create; ``job_types``: the contracts a schedule's job is checked against
        (default: the ones installed here, built-in and plugins)."""
        self.job_types: Mapping[str, JobType] = load_job_types() if job_types is None else job_types
        """The contracts the jobs of schedules are checked against, when defined and on
        every tick."""
        self._tick_ttl = max(1, tick_ttl)
        self._max_event_bytes = max_event_bytes
        self._log = log

    @classmethod
    def for_settings(
        cls, log: LogPort, settings: Settings, *, job_types: Mapping[str, JobType] | None = None
    ) -> CronBook:
        """Ticks outlive the misfire grace by a minute: a tick the scheduler could still
        use is never expired before it, and one it would skip is logged, not lost silently."""
        return cls(
            log,
            tick_ttl=math.ceil(settings.cron_misfire_grace) + 60,
            max_event_bytes=settings.max_event_bytes,
            job_types=job_types,
        )

    # --- definitions ----------------------------------------------------------------------

    async def get(self, name: str) -> CronDefinition | None:
        """The stored definition of ``name``, or ``None``."""
        definition, _ = await self._read(name)
        return definition

    async def definitions(self) -> list[CronDefinition]:
        """Every stored definition, by name."""
        found = [d async for d in self._scan()]
        return sorted(found, key=lambda d: d.name)

    async def put(self, spec: CronSpec, *, actor: str, source: Source = "api") -> CronDefinition:
        """Create or replace a schedule on behalf of ``actor`` (stored as ``updated_by``);
        returns what is stored.

        An unchanged definition is not written again and its server schedule is left alone
        (so its interval is not restarted). Raises :class:`InvalidSchedule` when the server
        refuses the schedule; the previous definition is then restored.
        :class:`~ferrisqueue.domain.jobbuilder.JobRefused` when the job's payload breaks its type's
        contract, :class:`PayloadTooLarge` when the job each tick creates would exceed the
        event limit; nothing is written then.
        """
        now = utcnow()
        self._check_job(spec, now)
        for _ in range(_TRIES):
            current, revision = await self._read(spec.name)
            wanted = CronDefinition(
                **spec.model_dump(),
                source=source,
                created_at=current.created_at if current else now,
                updated_at=now,
                updated_by=actor,
            )
            if current is not None and current.same_as(wanted):
                await self._apply(current)
                return current
            try:
                written = await self._write(wanted, revision)
                break
            except ConcurrentChange:
                continue  # someone else wrote it meanwhile: look again
        else:
            raise ConcurrentChange(f"schedule {spec.name} kept changing; retry")
        try:
            await self._apply(wanted)
        except InvalidSchedule:
            await self._restore(current, spec.name, written)
            raise
        return wanted

    async def pause(self, name: str, *, actor: str) -> CronDefinition:
        """Stop firing ``name`` (its definition stays); :class:`UnknownSchedule` if absent."""
        definition = await self._set_paused(name, True, actor)
        await self._unschedule(name)
        return definition

    async def resume(self, name: str, *, actor: str) -> CronDefinition:
        """Fire ``name`` again; :class:`UnknownSchedule` if absent."""
        definition = await self._set_paused(name, False, actor)
        await self._ensure_scheduled(definition)
        return definition

    async def delete(self, name: str, *, actor: str) -> None:
        """Remove ``name``: definition and server schedule; :class:`UnknownSchedule` if absent.

        The definition goes first, so a tick that fires in between creates no job. The
        delete marker names ``actor`` in its ``Fq-Actor`` header (a marker has no body).
        """
        for _ in range(_TRIES):
            current, revision = await self._read(name)
            if current is None:
                raise UnknownSchedule(f"no schedule {name}")
            try:
                await self._kv_publish(name, b"", revision, {_KV_OP: "DEL", ACTOR_HEADER: actor})
                break
            except ConcurrentChange:
                continue
        else:
            raise ConcurrentChange(f"schedule {name} kept changing; retry")
        await self._unschedule(name)

    async def reconcile(self) -> None:
        """Make the server schedules match the definitions: schedule the active ones that
        are missing or differ, cancel paused ones and those with no definition (left by a
        crash between the two writes of a pause, resume or delete)."""
        # Schedules are listed before definitions: a schedule is only ever published after
        # its definition was written, so one seen here without a definition is an orphan.
        scheduled = await self._scheduled_names()
        definitions = {d.name: d for d in await self.definitions()}
        for name in sorted(scheduled - definitions.keys()):
            log.info("cancelling the server schedule of %s: it has no definition", name)
            await self._unschedule(name)
        for definition in definitions.values():
            await self._apply(definition)

    async def next_fires(
        self, definition: CronDefinition, *, count: int = 3, now: datetime | None = None
    ) -> list[datetime]:
        """The next ``count`` fire times (UTC); none while paused or not scheduled.

        Cron: computed from the expression and time zone. Interval: the server counts from
        when the schedule was stored, so the newest tick's ``Nats-Schedule-Next`` is used,
        else the schedule message's time + the interval.
        """
        now = now or utcnow()
        if definition.paused:
            return []
        interval = interval_seconds(definition.schedule)
        if interval is None:
            return next_cron_fires(definition.schedule, definition.timezone, now, count)
        schedule = await self._last(cron_subject(definition.name))
        if schedule is None:
            return []
        first = round_to_second(schedule.stored_at + timedelta(seconds=interval))
        tick = await self._last(tick_subject(definition.name))
        if tick is not None and tick.seq > schedule.seq:
            announced = tick.headers.get(_NEXT_HEADER)
            if announced:
                first = datetime.fromisoformat(announced)
        return next_interval_fires(first, interval, now, count)

    # --- the KV bucket --------------------------------------------------------------------

    def _check_job(self, spec: CronSpec, now: datetime) -> None:
        # Refused now rather than on every tick: each tick's job is built as this one is
        # (contract checked), and its event must fit the event log.
        sample = build_job(spec.job, self.job_types, job_id=new_job_id(), now=now, actor=spec.actor)
        size = len(encode_event(sample))
        if size > self._max_event_bytes:
            raise PayloadTooLarge(
                f"the job of schedule {spec.name} would be a {size}-byte event; the limit is "
                f"{self._max_event_bytes} bytes"
            )

    async def _read(self, name: str) -> tuple[CronDefinition | None, int]:
        """The definition and the revision to guard the next write with (0: never written;
        a deleted key keeps the revision of its delete marker)."""
        raw = await self._log.read(KV_STREAM, f"{_KV_PREFIX}{name}")
        if raw is None:
            return None, 0
        return _decode(raw), raw.seq

    async def _scan(self) -> AsyncIterator[CronDefinition]:
        # One message per key (the bucket keeps no history): walk the stream's keys in order.
        seq = 1
        while True:
            raw = await self._log.read(KV_STREAM, f"{_KV_PREFIX}>", from_seq=seq)
            if raw is None:
                return
            definition = _decode(raw)
            if definition is not None:
                yield definition
            seq = raw.seq + 1

    async def _write(self, definition: CronDefinition, revision: int) -> int:
        body = definition.model_dump_json().encode()
        return await self._kv_publish(definition.name, body, revision, {})

    async def _kv_publish(
        self, name: str, body: bytes, revision: int, headers: dict[str, str]
    ) -> int:
        return await self._publish(
            f"{_KV_PREFIX}{name}",
            body,
            KV_STREAM,
            {**headers, EXPECTED_LAST_SUBJECT_SEQ: str(revision)},
        )

    async def _set_paused(self, name: str, paused: bool, actor: str) -> CronDefinition:
        for _ in range(_TRIES):
            current, revision = await self._read(name)
            if current is None:
                raise UnknownSchedule(f"no schedule {name}")
            if current.paused == paused:
                return current
            changed = current.model_copy(
                update={"paused": paused, "updated_at": utcnow(), "updated_by": actor}
            )
            try:
                await self._write(changed, revision)
            except ConcurrentChange:
                continue
            return changed
        raise ConcurrentChange(f"schedule {name} kept changing; retry")

    async def _restore(self, previous: CronDefinition | None, name: str, revision: int) -> None:
        """Undo a definition the server would not schedule (best effort)."""
        try:
            if previous is None:
                await self._kv_publish(name, b"", revision, {_KV_OP: "DEL"})
            else:
                await self._write(previous, revision)
                await self._apply(previous)
        except (ConcurrentChange, NatsUnavailable, PublishRejected, PublishOutcomeUnknown) as exc:
            log.warning("could not restore schedule %s after the server refused it: %s", name, exc)

    # --- the server schedule --------------------------------------------------------------

    def _schedule_headers(self, definition: CronDefinition) -> dict[str, str]:
        headers = {
            "Nats-Schedule": definition.schedule,
            "Nats-Schedule-Target": tick_subject(definition.name),
            "Nats-Schedule-TTL": f"{self._tick_ttl}s",
        }
        if definition.timezone:
            headers["Nats-Schedule-Time-Zone"] = definition.timezone
        return headers

    async def _apply(self, definition: CronDefinition) -> None:
        if definition.paused:
            await self._unschedule(definition.name)
        else:
            await self._ensure_scheduled(definition)

    async def _ensure_scheduled(self, definition: CronDefinition) -> None:
        subject = cron_subject(definition.name)
        wanted = self._schedule_headers(definition)
        body = json.dumps({"schedule": definition.name}).encode()
        for _ in range(_TRIES):
            last = await self._last(subject)
            if last is not None and _defining(last.headers) == wanted:
                return  # already running as defined: leave its interval alone
            expected = str(last.seq if last is not None else 0)
            try:
                await self._publish(
                    subject, body, SCHEDULE_STREAM, {**wanted, EXPECTED_LAST_SUBJECT_SEQ: expected}
                )
                break
            except ConcurrentChange:
                continue  # another writer published first: compare with theirs
        else:
            raise ConcurrentChange(f"the server schedule of {definition.name} kept changing")
        # A pause or delete may have come between our read and our publish: if so, its
        # purge may have run before our publish, so cancel the schedule again.
        current = await self.get(definition.name)
        if current is None or current.paused:
            await self._unschedule(definition.name)

    async def _unschedule(self, name: str) -> None:
        try:
            await self._log.purge(cron_subject(name), stream=SCHEDULE_STREAM)
        except PublishRejected as exc:  # as before the port: a failed purge is "retry later"
            raise NatsUnavailable(f"cancelling schedule {name}: {exc}") from exc

    async def _scheduled_names(self) -> set[str]:
        prefix = cron_subject("")
        subjects = await self._log.subjects(SCHEDULE_STREAM, f"{prefix}>")
        return {s.removeprefix(prefix) for s in subjects}

    async def _last(self, subject: str) -> StoredMessage | None:
        return await self._log.read(SCHEDULE_STREAM, subject)

    # --- NATS -----------------------------------------------------------------------------

    async def _publish(
        self, subject: str, body: bytes, stream: str, headers: dict[str, str]
    ) -> int:
        try:
            return await self._log.publish(subject, body, stream=stream, headers=headers)
        except PublishRejected as exc:
            if exc.code in _BAD_SCHEDULE:
                raise InvalidSchedule(f"the server refused the schedule: {exc}") from exc
            raise


def _defining(headers: Mapping[str, str] | None) -> dict[str, str]:
    return {k: v for k, v in (headers or {}).items() if k in _SCHEDULE_HEADERS}


def _decode(raw: StoredMessage) -> CronDefinition | None:
    """The definition a KV message holds; ``None`` for a delete marker or a broken value."""
    if raw.headers.get(_KV_OP) in ("DEL", "PURGE"):
        return None
    try:
        return CronDefinition.model_validate_json(raw.data)
    except ValidationError as exc:
        log.warning("ignoring the undecodable schedule %s: %s", raw.subject, exc)
        return None
