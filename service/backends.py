"""The vector backend the settings name: :class:`~service.vectors.FaissBackend` (default)
or :class:`~service.milvus.MilvusBackend` (pymilvus is imported only when it connects).

Apart from both backends' modules so that neither imports the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.index import AnnPolicy, IndexStore
from service.milvus import MilvusBackend
from service.vectors import FaissBackend, VectorBackend

if TYPE_CHECKING:
    from models.artifact import ModelMetadata
    from service.settings import Settings


def create_backend(settings: Settings, model: ModelMetadata, key: str) -> VectorBackend:
    """The backend ``settings.vector_backend`` names, for the served ``model`` (``key``:
    its ``name@version``)."""
    if settings.vector_backend == "milvus":
        return MilvusBackend(
            uri=settings.resolved_milvus_uri,
            token=settings.milvus_token.get_secret_value() if settings.milvus_token else None,
            db_name=settings.milvus_db,
            model_key=key,
            dim=model.embedding_size,
            prefix=settings.milvus_collection_prefix,
            index_type=settings.milvus_index_type,
            index_params=settings.milvus_index_params,
            search_params=settings.milvus_search_params,
        )
    return FaissBackend(
        store=IndexStore(settings.index_dir),
        model_key=key,
        dim=model.embedding_size,
        policy=AnnPolicy(
            min_faces=settings.ann_min_faces,
            nlist=settings.ann_nlist,
            nprobe=settings.ann_nprobe,
            recall=settings.ann_recall,
            retrain_growth=settings.ann_retrain_growth,
        ),
        search_threads=settings.faiss_threads,
        comparison=model.comparison,
    )
