"""Backing up and restoring streams through JetStream's snapshot API: what
``nats stream backup`` and ``nats stream restore`` do, in the same directory layout.

A snapshot is the stream's own store (message blocks and, unless left out, the consumers'
state), so a restore brings back every message at its original sequence, with its headers and
storage time, and every durable consumer at its position. That is why it is done this way and
not by reading the messages and publishing them again: the read store's checkpoints are
FQ_EVENTS sequences, and a copy that renumbered the log would make them point elsewhere.

The protocol, as nats-server implements it (``server/jetstream_api.go``, ``streamSnapshot`` and
``processStreamRestore``):

* **Backup.** A request to ``$JS.API.STREAM.SNAPSHOT.<stream>`` names a ``deliver_subject``;
  the answer carries the stream's ``config`` and ``state`` at the snapshot. The server then
  sends the snapshot (an S2-compressed tar, opaque to us) to ``deliver_subject`` in chunks.
  Every chunk but the last has a reply subject that must be answered: that is the flow
  control (a window of unanswered chunks; the server gives up after 5 s without an answer).
  A message with no body ends it, with a ``204`` status or the error's status.
* **Restore.** A request to ``$JS.API.STREAM.RESTORE.<stream>`` with that ``config`` and
  ``state`` answers with a ``deliver_subject``. The chunks are sent to it as requests, each
  answered with an empty message (or an error); an empty request ends the upload and is
  answered, once the server has rebuilt the stream, with the stream's info. A stream that
  exists is never overwritten: the server refuses the restore.

On disk, one directory per stream holds ``backup.json`` (``{"config", "state"}``) and
``stream.tar.s2`` (the chunks, concatenated), the files the ``nats`` CLI writes and reads.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from ferrisqueue.errors import BackupFailed

META_FILE = "backup.json"
DATA_FILE = "stream.tar.s2"
CHUNK_BYTES = 64 * 1024
"""Chunks sent on restore: the nats CLI's size, well under any server's max_payload."""
API_TIMEOUT = 10.0
"""Seconds to wait for the answer to a snapshot or restore request, or a chunk's ack."""
STALL_TIMEOUT = 30.0
"""Seconds a backup waits for the next chunk before it gives up."""
FINISH_TIMEOUT = 600.0
"""Seconds the server may take to rebuild a restored stream from its uploaded files."""


@dataclass(frozen=True)
class StreamCopy:
    """What one backup or restore moved: the stream's state as the server reported it."""

    stream: str
    messages: int
    first_seq: int
    last_seq: int
    consumers: int
    size: int
    """Bytes: the backup file's size, or the restored stream's stored bytes."""


async def backup_stream(
    nc: Client, stream: str, directory: Path, *, consumers: bool = True, check: bool = False
) -> StreamCopy:
    """Snapshot ``stream`` into ``directory`` (created; files in it are replaced).

    ``consumers``: include the durable consumers and their positions; ``check``: have the
    server verify every message's checksum first. The data is written to a temporary file and
    renamed only when the server reported success, with ``backup.json`` last, so a directory
    with a ``backup.json`` holds a complete backup.
    """
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    partial = directory / f"{DATA_FILE}.partial"
    inbox = nc.new_inbox()
    done: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    arrived = asyncio.Event()

    with partial.open("wb") as out:

        async def chunk(msg: Msg) -> None:
            arrived.set()
            if msg.data:
                if msg.reply:  # answer first: the server's window must not wait on the disk
                    await msg.respond(b"")
                out.write(msg.data)
                return
            headers = msg.headers or {}
            status = headers.get("Status", "204")
            if not done.done():
                done.set_result(
                    None if status == "204" else f"{status} {headers.get('Description', '')}"
                )

        sub = await nc.subscribe(inbox, cb=chunk)
        try:
            answer = await _request(
                nc,
                f"$JS.API.STREAM.SNAPSHOT.{stream}",
                {"deliver_subject": inbox, "no_consumers": not consumers, "jsck": check},
                within=API_TIMEOUT + (STALL_TIMEOUT if check else 0),
            )
            failure = await _until_done(done, arrived, stream)
        finally:
            await sub.unsubscribe()
    if failure:
        partial.unlink(missing_ok=True)
        raise BackupFailed(f"backup of {stream}: the server stopped with {failure}")
    os.replace(partial, directory / DATA_FILE)
    meta = {"config": answer["config"], "state": answer["state"]}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return _copy(stream, answer["state"], (directory / DATA_FILE).stat().st_size)


async def restore_stream(nc: Client, directory: Path, *, replicas: int | None = None) -> StreamCopy:
    """Recreate the stream backed up in ``directory`` (it must not exist on the server),
    optionally with another replica count; returns the restored stream's state."""
    meta_path, data_path = directory / META_FILE, directory / DATA_FILE
    if not meta_path.is_file() or not data_path.is_file():
        raise BackupFailed(f"{directory} holds no complete backup ({META_FILE}, {DATA_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
        stream: str = meta["config"]["name"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupFailed(f"{meta_path} is not a stream backup's metadata: {exc}") from exc
    if replicas is not None:
        meta["config"]["num_replicas"] = replicas
    answer = await _request(nc, f"$JS.API.STREAM.RESTORE.{stream}", meta, within=API_TIMEOUT)
    upload: str = answer["deliver_subject"]
    with data_path.open("rb") as data:
        while piece := data.read(CHUNK_BYTES):
            reply = await _chunk_request(nc, upload, piece, API_TIMEOUT, stream)
            if reply.data:  # an ack is empty; anything else is the server's error
                raise BackupFailed(f"restore of {stream}: {_error_of(reply.data)}")
    final = await _chunk_request(nc, upload, b"", FINISH_TIMEOUT, stream)
    info = json.loads(final.data)
    if error := info.get("error"):
        raise BackupFailed(f"restore of {stream}: {_describe(error)}")
    return _copy(stream, info["state"], int(info["state"].get("bytes", 0)))


async def _until_done(
    done: asyncio.Future[str | None], arrived: asyncio.Event, stream: str
) -> str | None:
    """The end-of-snapshot status (None for success), waiting as long as chunks keep coming:
    a large stream takes as long as it takes, a stalled one fails after STALL_TIMEOUT."""
    while True:
        arrived.clear()
        try:
            return await asyncio.wait_for(asyncio.shield(done), STALL_TIMEOUT)
        except TimeoutError:
            if not arrived.is_set():
                raise BackupFailed(
                    f"backup of {stream}: no chunk for {STALL_TIMEOUT:g} s"
                ) from None


async def _request(nc: Client, subject: str, body: dict[str, Any], *, within: float) -> Any:
    try:
        msg = await nc.request(subject, json.dumps(body).encode(), timeout=within)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
        raise BackupFailed(f"{subject}: JetStream did not answer ({exc!r})") from exc
    answer = json.loads(msg.data)
    if error := answer.get("error"):
        raise BackupFailed(f"{subject}: {_describe(error)}")
    return answer


async def _chunk_request(nc: Client, subject: str, piece: bytes, within: float, stream: str) -> Msg:
    try:
        return await nc.request(subject, piece, timeout=within)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
        raise BackupFailed(f"restore of {stream}: the server stopped answering ({exc!r})") from exc


def _error_of(data: bytes) -> str:
    try:
        return _describe(json.loads(data)["error"])
    except (ValueError, KeyError, TypeError):
        return data.decode(errors="replace")


def _describe(error: dict[str, Any]) -> str:
    return f"{error.get('description')} ({error.get('err_code')})"


def _copy(stream: str, state: dict[str, Any], size: int) -> StreamCopy:
    return StreamCopy(
        stream=stream,
        messages=int(state.get("messages", 0)),
        first_seq=int(state.get("first_seq", 0)),
        last_seq=int(state.get("last_seq", 0)),
        consumers=int(state.get("consumer_count", 0)),
        size=size,
    )
