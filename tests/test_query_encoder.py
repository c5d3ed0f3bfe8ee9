"""The torch-free query path: MiniLM in numpy against the torch model, the query side written
beside a checkpoint, and `capindex search` without importing torch."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from fakes import FakeCaptioner

import capindex
from capindex.errors import ModelError
from capindex.model import DEFAULT_EMBEDDING, embedding_id
from capindex.model.embedding import EmbeddingConfig, EmbeddingNet, ImageEmbedder, save_embedding
from capindex.model.query_encoder import QueryEncoder, query_side_path
from capindex.model.text_encoder import TextEncoder
from capindex.search import semantic

QUERIES = ["a dog runs on the beach", "A Toddler splashes in a FOUNTAIN!",
           "two men in red shirts playing football on green grass at sunset", "cat", "x"]


@pytest.fixture(scope="module")
def torch_text() -> TextEncoder:
    torch.set_num_threads(1)
    return TextEncoder.load()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_shipped_query_side_matches_the_torch_path(torch_text):
    fast = QueryEncoder.load()
    assert fast is not None, (f"{query_side_path(DEFAULT_EMBEDDING)} does not match "
                              f"{DEFAULT_EMBEDDING}: run python scripts/write_query_side.py")
    slow = ImageEmbedder.load().embed_query(torch_text.encode(QUERIES)).numpy()
    got = fast.encode(QUERIES)
    assert got.shape == slow.shape and got.dtype == np.float32
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert (1 - cosines(got, slow)).max() < 1e-4
    minilm = fast.text_vectors(QUERIES)  # before the adapter, too
    assert (1 - cosines(minilm, torch_text.encode(QUERIES).numpy())).max() < 1e-4
    assert np.allclose(semantic.query_vector(QUERIES[0]), got[0], atol=1e-6)


def test_a_checkpoint_carries_its_query_side_and_a_stale_one_is_not_used(tmp_path, torch_text):
    torch.manual_seed(0)
    net = EmbeddingNet(EmbeddingConfig(hidden=32, text_adapter=True))
    with torch.no_grad():
        net.adapter.weight.normal_(0, 0.05)  # an adapter that moves the vectors
        net.adapter.bias.normal_(0, 0.05)
    path = tmp_path / "e.pt"
    save_embedding(path, net, {"model_id": "test", "text_model": "all-MiniLM-L6-v2"})
    assert query_side_path(path).is_file()
    slow = ImageEmbedder.load(path).embed_query(torch_text.encode(QUERIES[:2])).numpy()
    fast = QueryEncoder.load(path).encode(QUERIES[:2])
    assert (1 - cosines(fast, slow)).max() < 1e-4
    assert (1 - cosines(fast, torch_text.encode(QUERIES[:2]).numpy())).max() > 1e-3

    side = query_side_path(path).read_bytes()
    with torch.no_grad():
        net.adapter.bias.add_(0.5)
    save_embedding(path, net, {"model_id": "test", "text_model": "all-MiniLM-L6-v2"})
    query_side_path(path).write_bytes(side)  # the old query side beside a new checkpoint
    assert QueryEncoder.load(path) is None  # search takes the torch path instead
    query_side_path(path).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(ModelError, match="not a readable safetensors file"):
        QueryEncoder.load(path)
    query_side_path(path).unlink()
    assert QueryEncoder.load(path) is None


def test_an_embedding_without_adapter_gives_minilm_vectors(tmp_path, torch_text):
    path = tmp_path / "plain.pt"
    save_embedding(path, EmbeddingNet(EmbeddingConfig(hidden=32)), {"model_id": "plain"})
    fast = QueryEncoder.load(path)
    assert fast.weight is None
    got = fast.encode(QUERIES[:3])
    assert (1 - cosines(got, torch_text.encode(QUERIES[:3]).numpy())).max() < 1e-4


@dataclass
class VectorCaption:
    text: str
    score: float
    tags: list
    embedding: np.ndarray


class VectorCaptioner(FakeCaptioner):
    """The fake captioner, its captions carrying vectors as the shipped embedding's."""

    embedding_id = embedding_id()

    def caption_batch(self, images):
        out = []
        for caption in super().caption_batch(images):
            vector = np.random.default_rng(len(out)).normal(size=384)
            out.append(VectorCaption(caption.text, caption.score, caption.tags,
                                     vector / np.linalg.norm(vector)))
        return out


_SEARCH = ("import sys\nfrom capindex.cli import main\n"
           "try:\n    main(['--library', sys.argv[1], 'search', 'a red photo', '--mode', sys.argv[2]])\n"
           "except SystemExit as end:\n    assert not end.code, end.code\n"
           "print('modules:', [m for m in ('torch', 'pyarrow', 'sqlalchemy') if m in sys.modules])\n")


def _search_modules(library, mode: str) -> str:
    out = subprocess.run([sys.executable, "-c", _SEARCH, str(library), mode],
                         capture_output=True, text=True, check=True)
    assert ".jpg" in out.stdout, out.stdout  # it found something
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture
def vector_library(tmp_path, photos):
    library = tmp_path / "lib"
    capindex.Library(library).ingest([photos], captioner=VectorCaptioner(), objects=False,
                                     workers=0)
    return library


def test_keyword_search_from_the_shell_imports_no_torch_pyarrow_or_sqlalchemy(vector_library):
    assert _search_modules(vector_library, "keyword") == "modules: []"


def test_hybrid_search_from_the_shell_imports_no_torch(vector_library):
    assert _search_modules(vector_library, "hybrid") == "modules: []"


def test_the_query_vector_needs_no_torch():
    code = ("import sys\nfrom capindex.search.semantic import query_vector\n"
            "v = query_vector('a dog on a beach')\n"
            "print(v.shape, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(384,) False"

