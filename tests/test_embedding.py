"""Search by meaning: the offline MiniLM text encoder, the image embedding checkpoint,
the shipped embedding on the sample photos, and a tiny training run."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

from capindex.errors import ModelError
from capindex.model.embedding import (
    DEFAULT_EMBEDDING,
    EmbeddingConfig,
    EmbeddingNet,
    ImageEmbedder,
    save_embedding,
)
from capindex.model.text_encoder import TEXT_DIM, TextEncoder
from capindex.training.embedding import (
    EmbeddingData,
    EmbeddingTrainConfig,
    ValSplit,
    WordQueries,
    fit,
)
from capindex.training.retrieval import retrieval_scores, text_to_image_ranks

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"


@pytest.fixture(scope="module")
def text_encoder() -> TextEncoder:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")

        def no_network(*args, **kwargs):
            raise OSError("network disabled in this test")

        mp.setattr(socket, "socket", no_network)
        mp.setattr(socket, "create_connection", no_network)
        return TextEncoder.load()


def test_text_encoder_offline_normalised_and_meaningful(text_encoder):
    v = text_encoder.encode(["a dog runs on the beach", "a puppy running on sand", "a plate of food"])
    assert v.shape == (3, TEXT_DIM) and v.dtype == torch.float32
    assert torch.allclose(v.norm(dim=1), torch.ones(3), atol=1e-5)
    sims = v @ v.T
    assert sims[0, 1] > sims[0, 2] + 0.2
    assert text_encoder.model_id == "all-MiniLM-L6-v2"


def test_text_encoder_lower_cases_and_batches_in_order(text_encoder):
    texts = ["A Cup Of Coffee", "a cup of coffee", "two children play football in a park", "x"]
    batched = text_encoder.encode(texts)
    alone = torch.cat([text_encoder.encode([t]) for t in texts])
    assert torch.allclose(batched, alone, atol=1e-5)  # padding does not change a vector
    assert torch.allclose(batched[0], batched[1], atol=1e-6)
    assert text_encoder.encode([]).shape == (0, TEXT_DIM)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    net = EmbeddingNet(EmbeddingConfig(pooling="attention", heads=4, hidden=32, text_adapter=True))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # non-trivial adapter and pooling
    path = tmp_path / "e.pt"
    save_embedding(path, net, {"model_id": "test-embedding", "text_model": "all-MiniLM-L6-v2"})
    embedder = ImageEmbedder.load(path)
    assert embedder.model_id == "test-embedding" and embedder.text_model_id == "all-MiniLM-L6-v2"
    assert len(embedder.weights_hash) == 64
    grid, logits = torch.rand(3, 49, 1280), torch.randn(3, 1000)
    out = embedder.embed(grid, logits)
    assert out.shape == (3, 384) and out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    net.half().float()  # the checkpoint keeps fp16 weights
    assert torch.allclose(out, net.eval()(grid, logits), atol=1e-5)
    queries = torch.nn.functional.normalize(torch.randn(2, 384), dim=-1)
    adapted = embedder.embed_query(queries)
    assert torch.allclose(adapted.norm(dim=1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(adapted, queries, atol=1e-3)


def test_bad_checkpoint_is_a_model_error(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"format": "something-else"}, bad)
    with pytest.raises(ModelError):
        ImageEmbedder.load(bad)
    with pytest.raises(ModelError):
        ImageEmbedder.load(tmp_path / "missing.pt")


def test_retrieval_ranks():
    images = torch.eye(3)
    queries = torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0], [0, 0, 1.0]])
    ranks = text_to_image_ranks(queries, images, torch.tensor([0, 1, 2]))
    assert ranks.tolist() == [1, 2, 1]
    scores = retrieval_scores(ranks)
    assert scores["R@1"] == pytest.approx(2 / 3, abs=1e-3) and scores["median_rank"] == 1


@pytest.fixture(scope="module")
def sample_features():
    from capindex.model.captioner import Captioner
    from capindex.model.preprocess import load_pixels

    names = ["chelsea", "coffee", "astronaut", "rocket", "camera"]
    captioner = Captioner.load(device="cpu")
    pixels = torch.stack([load_pixels(SAMPLES / f"{n}.jpg") for n in names])
    grid, logits = captioner.encode(pixels)
    return names, grid, logits


def test_shipped_embedding_finds_the_sample_photos(text_encoder, sample_features):
    names, grid, logits = sample_features
    embedder = ImageEmbedder.load()
    # three members of 5.5 MB (fp16) and the concept table: the package stays small
    assert embedder.weights_hash and DEFAULT_EMBEDDING.stat().st_size < 20 * 2**20
    images = embedder.embed(grid, logits)  # (5, 384)
    assert torch.allclose(images.norm(dim=1), torch.ones(5), atol=1e-5)
    queries = {"a cat": "chelsea", "a cup of coffee": "coffee"}
    vectors = embedder.embed_query(text_encoder.encode(list(queries)))
    best = (vectors @ images.T).argmax(dim=1).tolist()
    assert [names[i] for i in best] == list(queries.values())
    # the concept words of the checkpoint's table: the cat, captioned "a brown and white dog"
    concepts = dict(zip(names, embedder.concepts(images)))
    assert {"cat", "animal"} & set(concepts["chelsea"]), concepts["chelsea"]
    assert all(len(words) <= embedder.concept_table.limit for words in concepts.values())
    assert not {"cat", "kitten"} & set(concepts["rocket"] + concepts["astronaut"])


def _synthetic_data(images: int = 96, seed: int = 0) -> EmbeddingData:
    """Captions whose vectors are a fixed random map of their image's pooled grid."""
    g = torch.Generator().manual_seed(seed)
    kinds = torch.rand(8, 1, 1280, generator=g)  # what every eighth image shows
    grids = (2 * torch.rand(images, 1, 1280, generator=g) + kinds[torch.arange(images) % 8]
             + 0.2 * torch.rand(images, 49, 1280, generator=g)).half()  # distinct images
    pooled = grids.float().mean(dim=1)
    logits = torch.randn(images, 1000, generator=g)
    mix = torch.randn(1280, 384, generator=g)
    centred = pooled - pooled.mean(dim=0)
    caption_image = torch.arange(images).repeat_interleave(2)  # two captions an image
    text = centred[caption_image] @ mix + 0.5 * torch.randn(2 * images, 384, generator=g)
    text = torch.nn.functional.normalize(text, dim=-1)
    val = torch.arange(images - 16, images)
    caps = torch.arange(2 * (images - 16), 2 * images)
    # eight "words", each used by the captions of every eighth image (one kind)
    positive = torch.arange(images)[:, None] % 8 == torch.arange(8)[None, :]  # (images, 8)
    word_vectors = torch.nn.functional.normalize(positive.float().T @ text[::2], dim=-1)
    words = WordQueries([f"w{i}" for i in range(8)], word_vectors, positive,
                        torch.zeros_like(positive))
    split = ValSplit("synthetic", val, caps, caption_image[caps] - (images - 16),
                     word_vectors, positive[val].T)
    return EmbeddingData(grids, pooled, logits, text, caption_image, torch.arange(images - 16),
                         [split], [{"name": "synthetic"}], {}, words)


@pytest.mark.parametrize("model", [{"hidden": 64}, {"hidden": 64, "pooling": "attention",
                                                    "heads": 4, "text_adapter": True}])
def test_tiny_training_lowers_the_loss(model):
    torch.set_num_threads(2)
    data = _synthetic_data()
    config = EmbeddingTrainConfig(epochs=6, batch_size=16, lr=3e-3, captions_per_image=2,
                                  centroid_weight=0.5, patience=10, model=model, then=None)
    _net, report = fit(data, config, log=lambda m: None)
    losses = [h["loss"] for h in report["history"]]
    assert losses[-1] < 0.8 * losses[0]
    assert report["best"]["val"]["synthetic"]["R@5"] > 5 / 16  # better than chance


def _two_stages():
    torch.set_num_threads(2)
    data = _synthetic_data()
    config = EmbeddingTrainConfig(epochs=3, batch_size=16, lr=3e-3, captions_per_image=2,
                                  patience=10, model={"hidden": 64, "text_adapter": True},
                                  then={"word_weight": 1.0, "epochs": 2, "lr": 1e-3})
    net, report = fit(data, config, log=lambda m: None)
    return net, data, report


def test_a_second_stage_with_word_queries_starts_from_the_first():
    _net, _data, report = _two_stages()
    assert len(report["first"]["history"]) == 3 and len(report["history"]) == 2
    scores = report["best"]["val"]["synthetic"]
    assert scores["R@5"] > 5 / 16  # better than chance
    assert "words_P@10" in scores  # 16 val images: P@10 is no test here; the concepts are (below)


def test_the_concept_table_travels_in_the_checkpoint(tmp_path):
    from capindex.training.embedding import concept_table

    net, data, _report = _two_stages()
    table = concept_table(net, data, z=1.0, limit=2)
    save_embedding(tmp_path / "e.pt", net, {"model_id": "t"}, concepts=table)
    embedder = ImageEmbedder.load(tmp_path / "e.pt")
    val = data.val[0].images
    tagged = embedder.concepts(embedder.embed(data.grids[val], data.logits[val]))
    assert len(tagged) == 16 and all(len(words) <= 2 for words in tagged)
    # each val image's own word (every eighth image shares one) is among its concepts
    own = [f"w{int(i) % 8}" for i in val]
    assert sum(w in words for w, words in zip(own, tagged)) >= 12, tagged


def test_word_loss_prefers_the_images_whose_captions_use_the_word():
    from capindex.training.embedding import _word_loss

    net = EmbeddingNet(EmbeddingConfig(hidden=8))  # no text adapter: words stay as given
    e = torch.eye(384)
    # word 0: images 0 and 1 use it, image 3 once (unsure); word 1: image 2
    positive = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 0]], dtype=torch.bool)
    unsure = torch.tensor([[0, 0], [0, 0], [0, 0], [1, 0]], dtype=torch.bool)
    words = WordQueries(["dog", "beach"], e[:2], positive, unsure)
    rows, scale = torch.arange(4), torch.tensor(10.0)
    aligned = _word_loss(net, words, rows, e[[0, 0, 1, 1]], scale)
    swapped = _word_loss(net, words, rows, e[[1, 1, 0, 0]], scale)
    assert torch.isfinite(aligned) and aligned < swapped
    # the unsure image is neither positive nor negative for the word it has once
    moved = _word_loss(net, words, rows, e[[0, 0, 1, 0]], scale)
    assert moved < aligned  # image 3 left word 1's negatives; word 0 does not count it


def test_word_mentions_match_the_search_evaluation():
    from capindex.training.datasets import CaptionDataset
    from capindex.training.embedding import _enough, _mentions
    from capindex.training.search_eval import relevant_images

    captions = {"a.jpg": ["Two dogs run.", "A dog on grass", "a brown animal"],
                "b.jpg": ["A dog.", "a cat sits", "a cat and its toy"],
                "c.jpg": ["One dog in the snow"]}
    names = sorted(captions)
    ds = CaptionDataset("toy", Path("."), captions, names, [])
    from capindex.model.vocab import tokenize

    tokens = [set(tokenize(c)) for n in names for c in captions[n]]
    caption_image = torch.tensor([i for i, n in enumerate(names) for _ in captions[n]])
    for plurals in (False, True):
        counts = _mentions(["dog", "cat", "snow"], tokens, caption_image, 3, plurals=plurals)
        relevant, unsure = _enough(counts, caption_image, 3)
        for j, word in enumerate(["dog", "cat", "snow"]):
            assert {names[i] for i in relevant[:, j].nonzero().flatten().tolist()} == \
                relevant_images(ds, names, word)
        assert unsure[:, 0].tolist() == [False, True, False]  # b.jpg: one dog of three


def test_concept_table_tags_words_above_their_thresholds():
    from capindex.model.embedding import ConceptTable

    e = torch.eye(4)
    table = ConceptTable(["cat", "dog", "sea", "car"], e, torch.tensor([0.5, 0.5, 0.5, 0.9]),
                         torch.tensor([0.1, 0.1, 0.2, 0.1]), limit=2)
    images = torch.nn.functional.normalize(torch.tensor([[0.9, 0.7, 0.8, 0.0],
                                                         [0.0, 0.0, 0.0, 1.0],
                                                         [0.1, 0.1, 0.1, -0.5]]), dim=1)
    tagged = table.tag(images)
    # margins in spreads: cat 1.46, sea 0.37, dog 0.03 (above its threshold, over the limit)
    assert tagged[0] == ["cat", "sea"]
    assert tagged[1] == ["car"] and tagged[2] == []
    again = ConceptTable.from_dict(table.to_dict())
    assert again.tag(images) == tagged


def test_combined_members_sum_their_unit_vectors_and_average_the_adapter(tmp_path):
    from torch.nn import functional as F

    from capindex.model.embedding import combine_members, load_embedding

    torch.manual_seed(0)
    nets = [EmbeddingNet(EmbeddingConfig(hidden=32, text_adapter=True)).eval() for _ in range(3)]
    for net in nets:
        torch.nn.init.normal_(net.adapter.weight, std=0.05)
        for p in net.parameters():  # as a checkpoint holds them (combine_members rounds so)
            p.data = p.data.half().float()
    combined = combine_members(nets)
    assert combined.config.members == 3 and len(combined.mlp) == 3
    grid, logits = torch.randn(5, 49, 1280), torch.randn(5, 1000)
    expected = F.normalize(sum(net(grid, logits) for net in nets), dim=-1)
    assert torch.allclose(combined(grid, logits), expected, atol=1e-5)
    text = F.normalize(torch.randn(4, 384), dim=-1)
    mean_weight = sum(net.adapter.weight for net in nets) / 3
    mean_bias = sum(net.adapter.bias for net in nets) / 3
    assert torch.allclose(combined.text(text), F.normalize(text + text @ mean_weight.T + mean_bias,
                                                           dim=-1), atol=1e-6)
    save_embedding(tmp_path / "e.pt", combined, {"model_id": "t"})
    again, _ = load_embedding(tmp_path / "e.pt")
    assert torch.allclose(again(grid, logits), combined(grid, logits), atol=1e-3)
    with pytest.raises(ValueError):
        combine_members([nets[0], EmbeddingNet(EmbeddingConfig(hidden=16))])


def test_fit_members_trains_each_member_and_combines_them():
    from capindex.training.embedding import fit_members

    torch.set_num_threads(2)
    data = _synthetic_data()
    config = EmbeddingTrainConfig(epochs=2, batch_size=16, lr=3e-3, captions_per_image=2,
                                  patience=10, model={"hidden": 32, "text_adapter": True},
                                  then=None, members=2)
    net, report = fit_members(data, config, log=lambda m: None)
    assert net.config.members == 2 and len(report["members"]) == 2
    first, second = (m["history"][0]["loss"] for m in report["members"])
    assert first != second  # other seeds: other members
    assert report["best"]["val"]["synthetic"]["R@5"] > 5 / 16  # better than chance
