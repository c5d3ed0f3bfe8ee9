"""The hubness correction of short queries: the stored vectors of given ids, the corrected
ranking, the concept words carried by the query side, and where search applies it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_browse import PHOTOS, VectorCaptioner, fake_detector, names, photo
from test_vectors import Catalog, unit

import capindex
from capindex.model import DEFAULT_EMBEDDING
from capindex.model.embedding import (
    ConceptTable,
    EmbeddingConfig,
    EmbeddingNet,
    load_embedding_file,
    save_embedding,
)
from capindex.model.query_encoder import QueryEncoder
from capindex.search import ranking, semantic
from capindex.store.vectors import VectorConfig, VectorIndex


@pytest.mark.parametrize("config", [VectorConfig(), VectorConfig(exact_limit=50, train_sample=200)])
def test_vectors_of_gives_the_stored_rows_in_the_order_asked(tmp_path, config):
    rng = np.random.default_rng(3)
    vecs = unit(rng, 200, dim=8)
    index = VectorIndex(tmp_path / "vectors", config)
    index.reconcile(Catalog({i + 1: (i, vecs[i]) for i in range(200)}), "m1", 8)
    assert (index._open().centres is not None) == (config.exact_limit == 50)
    asked = [17, 3, 200, 1, 3]
    stored = vecs.astype(np.float16).astype(np.float32)
    assert np.array_equal(index.vectors_of(asked), stored[np.array(asked) - 1])
    assert index.vectors_of([]).shape[0] == 0
    with pytest.raises(KeyError):
        index.vectors_of([5, 999])


def test_a_photo_near_every_word_is_demoted_below_one_near_the_query_alone():
    bank = np.eye(3, dtype=np.float32)  # three words
    hub = np.full(3, 1 / np.sqrt(3), np.float32)  # as near every word as to the query
    specific = np.array([0.55, -0.59, -0.59], np.float32)
    specific /= np.linalg.norm(specific)  # nearer the query's word than any other
    query = bank[0]
    hits = [(1, float(hub @ query)), (2, float(specific @ query))]
    assert hits[0][1] > hits[1][1]
    vectors = np.stack([hub, specific])
    ranked = semantic.hub_corrected(hits, vectors, bank, neighbours=2, weight=1.0)
    assert [i for i, _ in ranked] == [2, 1]
    typical = np.sort(vectors @ bank.T, axis=1)[:, -2:].mean(axis=1)
    assert dict(ranked) == pytest.approx({1: hits[0][1] - typical[0], 2: hits[1][1] - typical[1]})
    unchanged = semantic.hub_corrected(hits, vectors, bank, neighbours=2, weight=0.0)
    assert [i for i, _ in unchanged] == [1, 2]
    assert semantic.hub_corrected([], np.zeros((0, 3)), bank, 2, 1.0) == []


def test_the_query_side_carries_the_concept_words(tmp_path):
    torch.manual_seed(0)
    net = EmbeddingNet(EmbeddingConfig(hidden=32, text_adapter=True))
    words = torch.nn.functional.normalize(torch.randn(4, net.config.dim), dim=-1)
    table = ConceptTable(["dog", "cat", "beach", "red"], words, torch.zeros(4), torch.ones(4), 3)
    path = tmp_path / "e.pt"
    save_embedding(path, net, {"model_id": "test"}, concepts=table)
    bank = QueryEncoder.load(path).bank
    assert bank.dtype == np.float32 and bank.shape == (4, net.config.dim)
    assert np.allclose(bank, words.numpy(), atol=1e-3)
    save_embedding(path, net, {"model_id": "test"})  # no concept table: no bank
    assert QueryEncoder.load(path).bank is None


def test_the_shipped_query_side_holds_the_shipped_concept_words():
    table = load_embedding_file(DEFAULT_EMBEDDING)[2]
    bank = semantic.word_bank()
    assert bank is not None and bank.shape == tuple(table.vectors.shape)
    assert np.allclose(bank, table.vectors.numpy(), atol=1e-3)


@pytest.mark.parametrize(("text", "short"), [("dog", True), ("a black dog", True),
                                             ("dog -cat", True), ("a dog runs on the beach", False),
                                             ("the of", True)])
def test_short_queries_are_those_of_one_or_two_content_words(text, short):
    assert ranking.is_short_query(text) is short
    assert ranking.semantic_share(text) == (ranking.SHORT_QUERY_SHARE if short
                                            else ranking.SENTENCE_SHARE)


def test_search_corrects_short_text_queries_only(tmp_path, monkeypatch):
    """The grey photo lies as near every colour word as to a yellow query: first by cosine,
    below the red ones once corrected; a sentence and `hubness` 0 keep the cosines."""
    folder = tmp_path / "album"
    folder.mkdir()
    for name, spec in PHOTOS.items():
        photo(folder / name, *spec)
    lib = capindex.Library(tmp_path / "lib")
    lib.ingest([folder], captioner=VectorCaptioner(), detector=fake_detector(), workers=0)
    dim = len(lib.dir.vector_index().vectors_of([1])[0])
    yellow = np.zeros(dim, np.float32)
    yellow[:2] = 1 / np.sqrt(2)
    bank = np.eye(3, dim, dtype=np.float32)  # red, green, blue
    monkeypatch.setattr(semantic, "query_vector", lambda text, path=None: yellow)
    monkeypatch.setattr(semantic, "word_bank", lambda path=None: bank)

    raw = lib.search("yellow", 5, mode="semantic", fusion={"hubness": 0})
    assert names(raw)[0] == "e_gray.jpg"
    corrected = lib.search("yellow", 5, mode="semantic")
    assert names(corrected)[0] != "e_gray.jpg"
    vectors = lib.dir.vector_index().vectors_of([h.id for h in raw])
    k = min(ranking.HUBNESS_NEIGHBOURS, len(bank))
    typical = np.sort(vectors @ bank.T, axis=1)[:, -k:].mean(axis=1)
    expected = {h.id: h.score - ranking.HUBNESS_WEIGHT * t for h, t in zip(raw, typical)}
    assert [h.id for h in corrected] == sorted(expected, key=lambda i: -expected[i])
    assert {h.id: h.score for h in corrected} == pytest.approx(expected, abs=1e-4)
    kept = next(v for k, v in lib.dir.vector_index()._open().derived.items()
                if k.startswith("typical"))  # kept for the next search, while the file is
    assert kept == pytest.approx(dict(zip([h.id for h in raw], typical.tolist())), abs=1e-6)
    assert [h.id for h in lib.search("yellow", 5, mode="semantic")] == [h.id for h in corrected]
    assert names(lib.search("yellow", 5))[0] != "e_gray.jpg"  # hybrid too
    sentence = "a yellow thing lies on a wooden table in the sun"
    assert names(lib.search(sentence, 5, mode="semantic")) == names(raw)


def test_without_a_query_side_the_bank_comes_from_the_checkpoint(monkeypatch):
    monkeypatch.setattr(semantic, "_query_encoder", lambda path: None)  # the torch path
    semantic.word_bank.cache_clear()
    try:
        bank = semantic.word_bank()
    finally:
        semantic.word_bank.cache_clear()
    table = load_embedding_file(DEFAULT_EMBEDDING)[2]
    assert bank.dtype == np.float32 and np.array_equal(bank, table.vectors.numpy())
