"""Gallery vectors in Milvus (``LRFR_VECTOR_BACKEND=milvus``), through pymilvus's
``MilvusClient``: a Milvus server or cluster (``LRFR_MILVUS_URI=http://host:19530``) or an
embedded milvus-lite file (the default, ``<data>/milvus.db``; tests and one machine).

One collection per gallery and model version, ``<prefix>_g<gallery id>_m<model hash>``,
with the face id as primary key and the L2-normalised embedding (inner product). The
collection records the gallery revision it reflects in a property
(``lrfr_revision``), written after every change, so other replicas that find their view
behind the database adopt the collection instead of rebuilding it. The database stays the
source of truth: a collection that is missing, stale or disagrees with it at startup or in
a consistency check is resynced from it (the faces it lacks upserted, the ones the
database no longer has deleted). Writes are upserts and deletes by id, so replaying one
is harmless.

pymilvus is an optional dependency (``pip install 'lrfr[milvus]'``); it is imported when
the backend is created.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from service.index import IndexState, ReadWriteLock, ids_digest
from service.vectors import Batches, GalleryVectors

logger = logging.getLogger(__name__)

REVISION_PROPERTY = "lrfr_revision"
_ID, _VECTOR = "id", "vector"
#: rows per insert request (a 128-d float32 row is 512 bytes; Milvus caps a request at 64 MB)
_INSERT_BATCH = 10_000
#: Milvus's limit on ``limit`` (topk) of one search
_MAX_TOPK = 16_384


def _unit_rows(vectors: np.ndarray, dim: int) -> np.ndarray:
    return np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dim)


class MilvusGallery:
    """The collection of one gallery.

    Args:
        client: a connected ``MilvusClient``.
        collection: the collection name.
        dim: embedding size.
        revision: the gallery revision the collection reflects.
        exact: whether its index is a flat scan.
        search_params: passed to ``MilvusClient.search`` (``{"params": {...}}``).
    """

    def __init__(
        self,
        client: Any,
        collection: str,
        *,
        dim: int,
        revision: int,
        exact: bool,
        search_params: dict[str, Any],
    ) -> None:
        self._client = client
        self.collection = collection
        self.dim = dim
        self.revision = revision
        self._exact = exact
        self._search_params = search_params
        # Milvus serialises its own writes; this only keeps the protocol of the FAISS index
        self.lock = ReadWriteLock()

    @property
    def exact(self) -> bool:
        return self._exact

    @property
    def count(self) -> int:
        rows = self._client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def ids(self) -> np.ndarray:
        iterator = self._client.query_iterator(
            self.collection, batch_size=10_000, filter="", output_fields=[_ID]
        )
        parts = [np.zeros(0, dtype=np.int64)]
        try:
            while True:
                rows = iterator.next()
                if not rows:
                    break
                parts.append(np.fromiter((row[_ID] for row in rows), np.int64, len(rows)))
        finally:
            iterator.close()
        return np.concatenate(parts)

    def state(self) -> IndexState:
        ids = self.ids()
        return IndexState(self.revision, len(ids), ids_digest(ids))

    def _record_revision(self, revision: int) -> None:
        self._client.alter_collection_properties(
            self.collection, properties={REVISION_PROPERTY: str(revision)}
        )
        self.revision = revision

    def write(self, ids: np.ndarray, vectors: np.ndarray, *, replace: bool = True) -> None:
        """Upserts (``replace``) or inserts rows; an insert is cheaper (no delete records)
        but only for ids known to be absent."""
        vectors = _unit_rows(vectors, self.dim)
        call = self._client.upsert if replace else self._client.insert
        for start in range(0, len(ids), _INSERT_BATCH):
            chunk = slice(start, start + _INSERT_BATCH)
            call(
                self.collection,
                [
                    {_ID: int(face_id), _VECTOR: vector}
                    for face_id, vector in zip(ids[chunk].tolist(), vectors[chunk], strict=True)
                ],
            )

    def delete(self, ids: np.ndarray | list[int]) -> None:
        id_list = [int(i) for i in ids]
        for start in range(0, len(id_list), _INSERT_BATCH):
            self._client.delete(self.collection, ids=id_list[start : start + _INSERT_BATCH])

    def add(self, ids: np.ndarray, vectors: np.ndarray, *, revision: int) -> None:
        if len(ids):
            self.write(np.asarray(ids, dtype=np.int64), vectors)
        self._record_revision(revision)

    def remove(self, ids: np.ndarray | list[int], *, revision: int) -> int:
        if len(ids):
            self.delete(ids)
        self._record_revision(revision)
        return len(ids)

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, _MAX_TOPK)
        if k <= 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        query = _unit_rows(vector, self.dim)[0]
        result = self._client.search(
            self.collection,
            data=[query],
            anns_field=_VECTOR,
            limit=k,
            output_fields=[_ID],
            search_params=self._search_params,
        )
        hits = result[0] if result else []
        sims = np.fromiter((hit["distance"] for hit in hits), np.float32, len(hits))
        ids = np.fromiter((hit["id"] for hit in hits), np.int64, len(hits))
        return sims, ids


class MilvusBackend:
    """Gallery vectors in Milvus collections.

    Args:
        uri: a Milvus server (``http://host:19530``) or a milvus-lite file path.
        model_key: the served model (``name@version``): part of every collection name.
        dim: embedding size.
        token: credentials (``user:password`` or an API key), if the server wants them.
        db_name: the Milvus database (None: the server's default).
        prefix: prefix of the collection names.
        index_type: Milvus index of the vectors (``AUTOINDEX``, ``HNSW``, ``IVF_FLAT``,
            ``FLAT``...).
        index_params: build parameters of that index.
        search_params: search parameters (``{"ef": 64}``, ``{"nprobe": 16}``).
        client_factory: builds the client (tests); default ``pymilvus.MilvusClient``.
    """

    name = "milvus"
    shared = True

    def __init__(
        self,
        *,
        uri: str,
        model_key: str,
        dim: int,
        token: str | None = None,
        db_name: str | None = None,
        prefix: str = "lrfr",
        index_type: str = "AUTOINDEX",
        index_params: dict[str, Any] | None = None,
        search_params: dict[str, Any] | None = None,
        client_factory: Callable[..., Any] | None = None,
    ) -> None:
        if client_factory is None:
            try:
                from pymilvus import MilvusClient
            except ImportError as exc:
                raise RuntimeError(
                    "LRFR_VECTOR_BACKEND=milvus needs pymilvus (and milvus-lite for a local "
                    "file): pip install 'lrfr[milvus]'"
                ) from exc
            client_factory = MilvusClient
        options: dict[str, Any] = {"uri": uri}
        if token:
            options["token"] = token
        if db_name:
            options["db_name"] = db_name
        self._client = client_factory(**options)
        self._uri = uri
        self._dim = dim
        self._prefix = prefix
        self._model_hash = hashlib.sha256(model_key.encode()).hexdigest()[:12]
        self._index_type = index_type
        self._index_params = dict(index_params or {})
        self._search_params = {"params": dict(search_params)} if search_params else {}

    # -- names -------------------------------------------------------------------------------

    def collection(self, gallery_id: int) -> str:
        return f"{self._prefix}_g{gallery_id}_m{self._model_hash}"

    def _collections_of(self, gallery_id: int) -> list[str]:
        """Every collection of a gallery, whatever the model version."""
        start = f"{self._prefix}_g{gallery_id}_m"
        return [name for name in self._client.list_collections() if name.startswith(start)]

    # -- collections -------------------------------------------------------------------------

    def _create(self, name: str) -> None:
        from pymilvus import DataType

        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(_ID, DataType.INT64, is_primary=True)
        schema.add_field(_VECTOR, DataType.FLOAT_VECTOR, dim=self._dim)
        index_params = self._client.prepare_index_params()
        index_params.add_index(
            field_name=_VECTOR,
            index_type=self._index_type,
            metric_type="IP",
            params=self._index_params,
        )
        self._client.create_collection(
            name, schema=schema, index_params=index_params, consistency_level="Strong"
        )

    def _open(self, name: str, revision: int) -> MilvusGallery:
        return MilvusGallery(
            self._client,
            name,
            dim=self._dim,
            revision=revision,
            exact=self._index_type == "FLAT",
            search_params=self._search_params,
        )

    def _stored_revision(self, name: str) -> int:
        properties = self._client.describe_collection(name).get("properties") or {}
        try:
            return int(properties.get(REVISION_PROPERTY, -1))
        except (TypeError, ValueError):
            return -1

    def empty(self, gallery_id: int, *, revision: int) -> MilvusGallery:
        """A new gallery: a fresh collection (any left by an earlier gallery of that id goes)."""
        for old in self._collections_of(gallery_id):
            self._client.drop_collection(old)
        name = self.collection(gallery_id)
        self._create(name)
        gallery = self._open(name, -1)
        gallery.add(np.zeros(0, np.int64), np.zeros((0, self._dim), np.float32), revision=revision)
        return gallery

    def build(self, gallery_id: int, batches: Batches, *, revision: int) -> MilvusGallery:
        """Resyncs the collection with the database: writes the faces it lacks, deletes
        the ones the database no longer has (its ids are read before the database's, so a
        face committed meanwhile is never deleted). A new collection is filled by inserts;
        an existing one by upserts, which another replica's writes cannot duplicate."""
        name = self.collection(gallery_id)
        for old in self._collections_of(gallery_id):
            if old != name:  # another model version: the database moved on from it
                self._client.drop_collection(old)
        fresh = not self._client.has_collection(name)
        if fresh:
            self._create(name)
        else:
            self._client.load_collection(name)
        gallery = self._open(name, -1)
        held = set() if fresh else set(gallery.ids().tolist())
        seen: set[int] = set()
        upserted = 0
        for ids, vectors in batches:
            ids = np.asarray(ids, dtype=np.int64)
            seen.update(ids.tolist())
            missing = np.fromiter((i not in held for i in ids.tolist()), bool, len(ids))
            if missing.any():
                # absent when the collection's ids were read: inserted, not upserted
                gallery.write(ids[missing], np.asarray(vectors)[missing], replace=not fresh)
                upserted += int(missing.sum())
        extra = sorted(held - seen)
        gallery.delete(extra)
        if upserted or extra:
            self._client.flush(name)  # seals what was written, so it is indexed
        gallery.add(np.zeros(0, np.int64), np.zeros((0, self._dim), np.float32), revision=revision)
        logger.info(
            "resynced Milvus collection %s: %d written, %d deleted", name, upserted, len(extra)
        )
        return gallery

    def load(self, gallery_id: int) -> MilvusGallery:
        name = self.collection(gallery_id)
        if not self._client.has_collection(name):
            raise FileNotFoundError(f"no Milvus collection {name}")
        self._client.load_collection(name)
        return self._open(name, self._stored_revision(name))

    def save(self, gallery_id: int, vectors: GalleryVectors) -> None:
        return None  # every change is durable in Milvus, its revision recorded with it

    def delete(self, gallery_id: int) -> None:
        for name in self._collections_of(gallery_id):
            self._client.drop_collection(name)

    def before_search(self) -> None:
        return None

    def retrain(
        self,
        vectors: GalleryVectors,
        write_lock: threading.Lock,
        publish: Callable[[GalleryVectors], bool],
    ) -> str | None:
        return None  # Milvus maintains its own indexes

    def close(self) -> None:
        self._client.close()
