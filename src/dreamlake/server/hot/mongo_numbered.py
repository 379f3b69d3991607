"""Numbered items in MongoDB (a track's points, a session's log entries), gap-free without a lock.

One document per write: ``{o: owner (track or session id), f: first index, s: first index still
held, e: end, n: [count per blob], b: [blob, ...] | p: [part id, ...], c: created_at, k: tag}``,
with unique ``(o, f)`` and ``(o, k)``. Its insert *is* the reservation of ``[f, e)``: a writer
inserts at the end it believes; a duplicate ``(o, f)`` means another server took that place, so it
reads the real end (the greatest ``e``) and tries again. A crash before the insert reserves
nothing; after it, everything is stored, and a retry of the same request (same ``k``) finds it
instead of storing it again. A ``$inc`` counter followed by an insert would leave a hole forever
if the server died between the two; this cannot.

Blobs too large for one document (MongoDB's limit is 16 MiB) go to ``parts`` documents first,
which nothing reads until the numbered document naming them is inserted. When the archiver has
moved ``[.., end)`` to the cold tier, documents below ``end`` are deleted and one straddling
``end`` has its ``s`` raised, so reads skip its archived blobs.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bson import Binary, ObjectId
from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

Doc = dict[str, Any]

INLINE_BYTES = 8 << 20  # blobs up to this much in all stay in their document; more go to parts


class Numbered:
    """One collection of numbered documents and the ``parts`` collection their large blobs use."""

    def __init__(self, docs: AsyncCollection[Doc], parts: AsyncCollection[Doc]) -> None:
        self.docs = docs
        self._parts = parts

    async def create_indexes(self) -> None:
        """The reservation, the retry lookup, and the range reads; idempotent."""
        await self.docs.create_index([("o", ASCENDING), ("f", ASCENDING)], unique=True)
        await self.docs.create_index([("o", ASCENDING), ("k", ASCENDING)], unique=True)
        await self.docs.create_index([("o", ASCENDING), ("e", ASCENDING), ("s", ASCENDING)])

    async def reserve(
        self, owner: str, hint: int, blobs: Sequence[tuple[int, bytes]], tag: str, now: str
    ) -> int:
        """Store ``blobs`` as one document at the owner's end (believed to be ``hint``) and return
        its first index; if ``tag`` stored them already (a retried request), that one's."""
        count = sum(n for n, _ in blobs)
        body = await self._body(blobs)
        start = hint
        while True:
            doc = {"o": owner, "f": start, "s": start, "e": start + count, **body, "c": now, "k": tag}
            try:
                await self.docs.insert_one(doc)
                return start
            except DuplicateKeyError:
                mine = await self.docs.find_one({"o": owner, "k": tag}, {"f": 1})
                if mine is not None:
                    if "p" in body:  # ours are not needed: the first attempt's parts are stored
                        await self._parts.delete_many({"_id": {"$in": body["p"]}})
                    return int(mine["f"])
                last = await self.docs.find_one({"o": owner}, {"e": 1}, sort=[("e", -1)])
                if last is not None:
                    start = max(start, last["e"])

    async def _body(self, blobs: Sequence[tuple[int, bytes]]) -> Doc:
        counts = [n for n, _ in blobs]
        if sum(len(b) for _, b in blobs) <= INLINE_BYTES:
            return {"n": counts, "b": [Binary(bytes(b)) for _, b in blobs]}
        parts: list[Doc] = [{"_id": ObjectId(), "b": []}]
        size = 0
        for _, blob in blobs:
            if size and size + len(blob) > INLINE_BYTES:
                parts.append({"_id": ObjectId(), "b": []})
                size = 0
            parts[-1]["b"].append(Binary(bytes(blob)))
            size += len(blob)
        await self._parts.insert_many(parts)
        return {"n": counts, "p": [part["_id"] for part in parts]}

    async def read(self, owner: str, start: int, end: int) -> list[tuple[int, int, bytes, str]]:
        """``(first index, count, blob, created_at)`` of the stored blobs holding any item of
        ``[start, end)``, in index order."""
        if end <= start:
            return []
        query = {"o": owner, "e": {"$gt": start}, "s": {"$lt": end}}
        out = []
        async for doc in self.docs.find(query, {"k": 0}).sort("e", ASCENDING):
            blobs = doc["b"] if "b" in doc else await self._part_blobs(doc["p"])
            index = doc["f"]
            for count, blob in zip(doc["n"], blobs, strict=True):
                if index + count > max(start, doc["s"]) and index < end:
                    out.append((index, count, bytes(blob), doc["c"]))
                index += count
        return out

    async def _part_blobs(self, ids: list[ObjectId]) -> list[bytes]:
        found = {part["_id"]: part["b"] async for part in self._parts.find({"_id": {"$in": ids}})}
        return list(itertools.chain.from_iterable(found[i] for i in ids))

    async def drop_below(
        self, owner: str, end: int, unfinished: Callable[[list[str]], Awaitable[set[str]]]
    ) -> None:
        """Forget items below ``end`` (archived): delete the documents wholly below it, except
        those whose tag ``unfinished`` names (emptied instead: a retry of their request must still find them),
        and raise ``s`` of the one straddling it past its archived blobs. A crash part-way leaves
        documents that reads skip, and the next call removes."""
        # ``$lt: end + 1``, not ``$lte: end``: SecantusDB 0.7 misses keys equal to a ``$lte`` bound on
        # a compound index with fields after the bounded one (same set of integers either way).
        below = [
            d async for d in self.docs.find({"o": owner, "e": {"$lt": end + 1}}, {"k": 1, "p": 1, "e": 1})
        ]
        keep = await unfinished([d["k"] for d in below]) if below else set()
        drop = [d for d in below if d["k"] not in keep]
        if drop:
            await self.docs.delete_many({"_id": {"$in": [d["_id"] for d in drop]}})
            parts = [p for d in drop for p in d.get("p", ())]
            if parts:
                await self._parts.delete_many({"_id": {"$in": parts}})
        for kept in (d for d in below if d["k"] in keep):
            await self.docs.update_one({"_id": kept["_id"]}, {"$set": {"s": kept["e"]}})
        straddling = await self.docs.find_one(
            {"o": owner, "s": {"$lt": end}, "e": {"$gt": end}}, {"f": 1, "n": 1}
        )
        if straddling is not None:
            held = straddling["f"]
            for count in straddling["n"]:
                if held + count > end:
                    break
                held += count
            await self.docs.update_one({"_id": straddling["_id"]}, {"$max": {"s": held}})


__all__ = ["INLINE_BYTES", "Numbered"]
