"""What a dead writer's spool still owes its server, as the batches that send it exactly once."""

from __future__ import annotations

from typing import Any

from .._sinks.outbox import Batch, Outbox
from .spool import LOGS_ID, PARAMS_ID, Orphan


def outbox_of(orphan: Orphan, max_points: int) -> Outbox:
    """An outbox holding :func:`recovered_batches`, whose sends and acknowledgements mark the spool."""
    outbox = Outbox(orphan.writer, orphan.sending, orphan.acked)
    outbox.sealed = recovered_batches(orphan, max_points)
    return outbox


def recovered_batches(orphan: Orphan, max_points: int) -> list[Batch]:
    """The batches that send what a dead writer's spool holds and its server has not acknowledged:
    first each batch it had sent without seeing the answer, as it was (its number, its points), then
    the rest in new batches of about ``max_points``, numbered after every number it used."""
    in_flight: dict[int, Batch] = {}
    rest: list[tuple[int, list[tuple[int, dict[Any, Any]]]]] = []
    for track_id in sorted(orphan.records):
        records = orphan.unacked(track_id)
        sent = orphan.in_flight(track_id)
        if sent is not None:
            number, end = sent
            batch = in_flight.setdefault(number, Batch(number=number))
            head = [r for r in records if r[0] < end]
            _add(batch, orphan, track_id, head, end)
            records = records[len(head) :]
        if records:
            rest.append((track_id, records))
    batches = sorted(in_flight.values(), key=lambda b: b.number)
    number = max([orphan.next_group, *(b.number + 1 for b in batches)])
    batch = Batch(number=number)
    for track_id, records in rest:
        while records:
            room = max_points - batch.size
            part, records = records[:room], records[room:]
            _add(batch, orphan, track_id, part, part[-1][0] + 1)
            if batch.size >= max_points:
                batches.append(batch)
                number += 1
                batch = Batch(number=number)
    if batch:
        batches.append(batch)
    return batches


def _add(
    batch: Batch, orphan: Orphan, track_id: int, records: list[tuple[int, dict[Any, Any]]], end: int
) -> None:
    batch.ends[track_id] = end
    if not records:
        return
    fields = [r[1] for r in records]
    if track_id == LOGS_ID:
        batch.add_logs(fields)
    elif track_id == PARAMS_ID:
        batch.add_parameters(fields)
    else:
        batch.add_track(orphan.names[track_id], fields, {})
