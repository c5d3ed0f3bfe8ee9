"""The vector index: rebuilt from the catalogue, exact brute-force search, damage tolerated."""

from __future__ import annotations

import numpy as np
import pytest

from capindex.store.vectors import VectorConfig, VectorIndex, VectorIndexDamaged


class Catalog:
    """The two catalogue reads the vector index uses, over a dict id -> (seq, vector)."""

    def __init__(self, rows: dict[int, tuple[int, np.ndarray]], model: str = "m1") -> None:
        self.rows, self.model = rows, model

    def embedding_seqs(self, model_id):
        return {i: s for i, (s, _) in self.rows.items()} if model_id == self.model else {}

    def embeddings(self, model_id):
        for i in sorted(self.embedding_seqs(model_id)):
            seq, vec = self.rows[i]
            yield i, seq, vec.astype("<f2").tobytes()


def unit(rng, n, dim=8):
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_search_is_exact_and_follows_the_catalogue(tmp_path):
    rng = np.random.default_rng(0)
    vecs = unit(rng, 50)
    catalog = Catalog({i + 1: (100 + i, vecs[i]) for i in range(50)})
    index = VectorIndex(tmp_path / "vectors")
    assert index.search(vecs[0]) == []  # no index yet
    assert index.reconcile(catalog, "m1", 8) is True
    assert index.reconcile(catalog, "m1", 8) is False  # nothing changed: not rewritten
    query = unit(rng, 1)[0]
    expected = np.argsort(-(vecs.astype(np.float16).astype(np.float32) @ query))[:5] + 1
    found = index.search(query, 5)
    assert [i for i, _ in found] == expected.tolist()
    assert found[0][1] >= found[-1][1]
    assert next(i for i, _ in index.search(query, 5, exclude={int(expected[0])})) == expected[1]
    assert np.allclose(index.vector(3), vecs[2], atol=1e-3) and index.vector(999) is None

    del catalog.rows[1]  # a deleted row and a rewritten one
    catalog.rows[2] = (200, vecs[2])
    assert index.reconcile(catalog, "m1", 8) is True
    assert index.count() == 49 and 1 not in [i for i, _ in index.search(vecs[0], 50)]


def test_another_model_rebuilds_and_damage_is_reported_then_repaired(tmp_path):
    rng = np.random.default_rng(1)
    vecs = unit(rng, 10)
    index = VectorIndex(tmp_path / "vectors")
    index.reconcile(Catalog({i + 1: (i, vecs[i]) for i in range(10)}), "m1", 8)
    assert index.model_id() == "m1"
    assert index.reconcile(Catalog({}, model="m2"), "m2", 8) is True and index.count() == 0
    assert index.model_id() == "m2" and index.search(vecs[0]) == []
    index.reconcile(Catalog({1: (1, vecs[0])}), "m1", 8)
    with open(index.path, "r+b") as f:
        f.truncate(30)
    with pytest.raises(VectorIndexDamaged):
        index.search(vecs[0])
    assert index.reconcile(Catalog({1: (1, vecs[0])}), "m1", 8) is True  # rebuilt
    assert [i for i, _ in index.search(vecs[0])] == [1]


def test_a_clustered_index_finds_the_exact_top_hits(tmp_path):
    """Above exact_limit the rows are grouped by cluster; probing every cluster is exact,
    and the default share finds a stored photo's own vector first with its exact score."""
    rng = np.random.default_rng(2)
    centres = unit(rng, 12, dim=16)
    vecs = centres[rng.integers(0, 12, 600)] + 0.3 * rng.normal(size=(600, 16))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    stored = vecs.astype(np.float16).astype(np.float32)
    catalog = Catalog({i + 1: (i, vecs[i]) for i in range(600)})
    index = VectorIndex(tmp_path / "vectors", VectorConfig(exact_limit=100, train_sample=300,
                                                            probe_rows=0))  # 2 of 24 probed
    assert index.reconcile(catalog, "m1", 16) is True
    assert index.reconcile(catalog, "m1", 16) is False
    opened = index._open()
    assert opened.centres.shape == (24, 16) and opened.offsets[-1] == 600
    assert sorted(opened.ids.tolist()) == list(range(1, 601)) and index.count() == 600
    everything = VectorIndex(tmp_path / "vectors", VectorConfig(exact_limit=100, probe_rows=600))
    for query in unit(rng, 5, dim=16):
        expected = (np.argsort(-(stored @ query), kind="stable")[:10] + 1).tolist()
        assert [i for i, _ in everything.search(query, 10)] == expected
    for row in (0, 123, 599):
        (best, score), *_ = index.search(vecs[row], 10)
        assert best == row + 1 and score == pytest.approx(float(stored[row] @ vecs[row]), abs=1e-5)
        assert index.search(vecs[row], 10, exclude={row + 1})[0][0] != row + 1
    assert np.allclose(index.vector(124), stored[123])

    # a few more rows: written again in cluster order, with the same centres
    catalog.rows[601] = (601, vecs[0])
    assert index.reconcile(catalog, "m1", 16) is True
    assert np.array_equal(index._open().centres, opened.centres)
    assert index.search(vecs[0], 2)[1][0] in (1, 601)
    # an index written with exact search where clusters are due (or the reverse) is rewritten
    assert VectorIndex(tmp_path / "vectors").reconcile(catalog, "m1", 16) is True
    assert VectorIndex(tmp_path / "vectors")._open().centres is None
