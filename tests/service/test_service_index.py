"""FAISS gallery indexes and their files: round trip, corruption, atomic writes; IVF
indexes: recall against exact search, removal, files, when to retrain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.index import (
    AnnPolicy,
    GalleryIndex,
    IndexFileError,
    IndexStore,
    _calibrate_nprobe,
    ids_digest,
)


def _unit(rng: np.random.Generator, n: int, dim: int = 8) -> np.ndarray:
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _filled(n: int = 20) -> tuple[GalleryIndex, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = np.arange(100, 100 + n, dtype=np.int64)
    vectors = _unit(rng, n)
    index = GalleryIndex(8)
    index.add(ids, vectors, revision=1)
    return index, ids, vectors


def test_search_returns_inner_product_and_ids() -> None:
    index, ids, vectors = _filled()
    sims, found = index.search(vectors[3], 3)
    assert found[0] == ids[3]
    assert sims[0] == pytest.approx(1.0, abs=1e-5)
    assert sims[0] >= sims[1] >= sims[2]


def test_removed_ids_are_never_returned() -> None:
    index, ids, vectors = _filled()
    assert index.remove([ids[3], 999], revision=2) == 1
    _, found = index.search(vectors[3], index.count)
    assert ids[3] not in found
    assert index.count == len(ids) - 1
    assert index.revision == 2


def test_round_trip_through_a_file(tmp_path: Path) -> None:
    index, ids, vectors = _filled()
    store = IndexStore(tmp_path)
    store.save(7, "m@1", index)
    loaded = store.load(7, "m@1")
    assert loaded.revision == 1
    assert loaded.state() == index.state()
    assert loaded.state().ids_sha256 == ids_digest(ids[::-1])
    np.testing.assert_array_equal(loaded.search(vectors[5], 1)[1], [ids[5]])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "gallery-7.faiss"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_corruption_is_detected(tmp_path: Path, damage: str) -> None:
    index, _, _ = _filled()
    store = IndexStore(tmp_path)
    path = store.save(1, "m@1", index)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-10] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray(b"not an index at all")
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFileError):
        store.load(1, "m@1")


def test_a_file_of_another_gallery_or_model_is_refused(tmp_path: Path) -> None:
    index, _, _ = _filled()
    store = IndexStore(tmp_path)
    store.save(1, "m@1", index)
    store.path(1).rename(store.path(2))
    with pytest.raises(IndexFileError, match="belongs to gallery 1"):
        store.load(2, "m@1")
    store.path(2).rename(store.path(1))
    with pytest.raises(IndexFileError, match="model m@1"):
        store.load(1, "m@2")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        IndexStore(tmp_path).load(1, "m@1")


# -- approximate (IVF) indexes --------------------------------------------------------------


def _ivf(n: int = 3000, dim: int = 16) -> tuple[GalleryIndex, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    ids = np.arange(10, 10 + n, dtype=np.int64)
    vectors = _unit(rng, n, dim)
    policy = AnnPolicy(min_faces=1000, recall=0.95, calibration_queries=300)
    return GalleryIndex.build(dim, ids, vectors, revision=4, policy=policy), ids, vectors


def test_small_galleries_stay_exact() -> None:
    rng = np.random.default_rng(0)
    index = GalleryIndex.build(8, np.arange(50), _unit(rng, 50), revision=1,
                               policy=AnnPolicy(min_faces=51))
    assert index.exact and index.kind == "flat" and index.count == 50


def test_ivf_reaches_its_recall_target_against_exact_search() -> None:
    index, ids, vectors = _ivf()
    assert index.kind == "ivf" and index.trained_on == len(ids)
    assert index.index.nlist == 64 and 1 <= index.index.nprobe < 64
    # fresh queries, not the calibration's: nearest neighbour by IVF vs exact
    rng = np.random.default_rng(7)
    queries = _unit(rng, 300, 16)
    exact = (queries @ vectors.T).argmax(axis=1)
    found = np.array([index.search(q, 1)[1][0] for q in queries])
    assert np.mean(found == ids[exact]) >= 0.9


class _ListsNeeded:
    """A stand-in IVF index that finds the exact neighbours once ``nprobe`` reaches
    ``needed`` lists, and nothing before."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, needed: int) -> None:
        self.nlist, self.nprobe = 128, 1
        self.ids, self.vectors, self.needed, self.tried = ids, vectors, needed, []

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self.tried.append(self.nprobe)
        order = np.argsort(-(queries @ self.vectors.T), axis=1)[:, :k]
        found = self.ids[order] if self.nprobe >= self.needed else np.full_like(order, -1)
        return np.zeros(found.shape, np.float32), found


@pytest.mark.parametrize(
    ("needed", "chosen"), [(45, 48), (33, 40), (64, 64), (12, 12), (3, 4), (1, 1)]
)
def test_nprobe_is_refined_in_eighths_below_the_first_power_of_two(
    needed: int, chosen: int
) -> None:
    rng = np.random.default_rng(3)
    ids, vectors = np.arange(400, dtype=np.int64), _unit(rng, 400, 8)
    ivf = _ListsNeeded(ids, vectors, needed)
    policy = AnnPolicy(recall=0.99, calibration_queries=50)
    nprobe, recall = _calibrate_nprobe(ivf, ids, vectors, policy)  # type: ignore[arg-type]
    assert (nprobe, recall) == (chosen, 1.0)
    assert max(ivf.tried) <= 2 * needed  # never past the first power of two that reaches it


def test_a_pair_space_gallery_is_calibrated_with_query_vectors() -> None:
    from models.comparison import queries, stored_vectors

    rng = np.random.default_rng(4)
    n, d = 200, 4
    g, z = _unit(rng, n, d), _unit(rng, n, d)
    sharp = np.arange(n) % 2 == 0
    stored = stored_vectors(g, z, sharp).astype(np.float32)
    ids = np.arange(n, dtype=np.int64)
    ivf = _ListsNeeded(ids, stored, needed=1)
    searched: list[np.ndarray] = []
    original = ivf.search
    ivf.search = lambda q, k: (searched.append(q), original(q, k))[1]  # type: ignore[method-assign]
    _calibrate_nprobe(ivf, ids, stored, AnnPolicy(recall=0.9, calibration_queries=30),  # type: ignore[arg-type]
                      "pair-space")
    expected = {row.tobytes() for row in queries(stored, "pair-space")}
    rows = np.concatenate(searched)
    assert len(rows) and all(row.tobytes() in expected for row in rows)
    assert not any(row.tobytes() == stored[i].tobytes() for row in rows for i in range(n))


def test_ivf_removes_ids_and_round_trips(tmp_path: Path) -> None:
    index, ids, vectors = _ivf()
    assert index.remove(ids[:5], revision=5) == 5
    for row in range(5):
        assert ids[row] not in index.search(vectors[row], 20)[1]
    store = IndexStore(tmp_path)
    store.save(3, "m@1", index)
    loaded = store.load(3, "m@1")
    assert loaded.kind == "ivf" and loaded.state() == index.state()
    assert loaded.index.nprobe == index.index.nprobe and loaded.trained_on == len(ids)
    got_ids, got_vectors = loaded.contents()
    order = np.argsort(got_ids)
    np.testing.assert_array_equal(got_ids[order], ids[5:])
    np.testing.assert_allclose(got_vectors[order], vectors[5:])


def test_when_an_index_needs_rebuilding() -> None:
    index, _, _ = _ivf()
    policy = AnnPolicy(min_faces=1000, retrain_growth=2.0)
    assert index.needs_rebuild(policy) is None
    cheap = index.needs_rebuild(AnnPolicy(min_faces=7000))
    assert cheap == "3000 faces: exact search is cheap again"
    index.trained_on = 1500
    assert index.needs_rebuild(policy) == "3000 faces, trained on 1500"
    flat, _, _ = _filled(30)
    assert flat.needs_rebuild(AnnPolicy(min_faces=30)) is not None
    assert flat.needs_rebuild(AnnPolicy(min_faces=31)) is None
