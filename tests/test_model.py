"""The captioning model: encoder weights, decoder cells, search, checkpoints, shipped default."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import PIL
import pytest
import torch
from fakes import FakeCaptioner
from PIL import Image

from capindex.errors import ModelError
from capindex.model import DEFAULT_CHECKPOINT
from capindex.model.captioner import Captioner, load_placement
from capindex.model.checkpoint import load_checkpoint, save_checkpoint
from capindex.model.config import ModelConfig
from capindex.model.decoder import CaptionDecoder
from capindex.model.decoding import (
    _banned_by_trigrams,
    beam_search,
    beam_search_batched,
    greedy_search,
)
from capindex.model.encoder import Encoder, top_tags
from capindex.model.guide import shipped_guide
from capindex.model.preprocess import image_tensor, load_pixels, resize, to_image, to_pixels
from capindex.model.vocab import Vocabulary, tokenize
from capindex.pipeline.caption import DeferredCaptioner

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"
CAPTIONS = ["a dog runs on the grass", "a man rides a red bike down the road",
            "two children play in the water", "a cat sits on a sofa"]


@pytest.fixture(scope="module")
def encoder():
    return Encoder()


@pytest.fixture(scope="module")
def shipped():
    return Captioner.load(device="cpu", beam_size=3)


def tiny_decoder(vocab: Vocabulary, cell: str) -> CaptionDecoder:
    """A small untrained decoder (seed torch first for a given one)."""
    return CaptionDecoder(ModelConfig(vocab_size=len(vocab), cell=cell, hidden_dim=32,
                                      embed_dim=16, attention_dim=16, project_dim=32)).eval()


def noisy_sample_features(shipped, copies: int, noise: float) -> torch.Tensor:
    """Encoder grids of the sample photos, `copies` times, all but the first copy noised."""
    images = torch.stack([image_tensor(path) for path in sorted(SAMPLES.glob("*.jpg"))] * copies)
    images[5:] = (images[5:] + noise * torch.randn_like(images[5:])).clamp(-1, 1)
    return shipped.encoder(images)[0]


def test_encoder_weights_are_the_pretrained_imagenet_ones(encoder):
    images = torch.stack([image_tensor(SAMPLES / "chelsea.jpg"), image_tensor(SAMPLES / "coffee.jpg")])
    _, logits = encoder(images)
    cat, coffee = top_tags(logits, k=3)
    assert cat[0][0] in {"tabby", "tiger cat", "Egyptian cat"} and cat[0][1] > 0.5
    assert coffee[0][0] in {"espresso", "cup", "coffee mug"} and coffee[0][1] > 0.5


def test_encoder_output_shapes(encoder):
    features, logits = encoder(torch.zeros(2, 3, 224, 224))
    assert features.shape == (2, 49, 1280)
    assert logits.shape == (2, 1000)


def test_config_rejects_unknown_cell():
    with pytest.raises(ValueError, match="cell must be one of gru, lstm, rnn"):
        ModelConfig(vocab_size=10, cell="transformer")


def test_vocabulary_round_trip():
    vocab = Vocabulary.build(CAPTIONS, min_count=1)
    ids = vocab.encode("A dog runs on the GRASS .", max_len=20)
    assert ids[0] == vocab.start and ids[-1] == vocab.end
    assert vocab.decode(ids) == "a dog runs on the grass"
    assert vocab.decode(vocab.encode("a zebra", 20)) == "a <unk>"
    assert tokenize("Two dogs, playing!") == ["two", "dogs", "playing"]


def test_trigram_guard_bans_the_word_that_repeats_a_trigram():
    # "on the grass on the" -> "grass" would repeat "on the grass"
    assert _banned_by_trigrams([[5, 6, 7, 5, 6]]) == [[7]]
    assert _banned_by_trigrams([[5, 6, 7]]) == [[]]


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_beam_search_of_width_one_equals_greedy(cell):
    torch.manual_seed(0)
    vocab = Vocabulary.build(CAPTIONS, min_count=1)
    decoder = tiny_decoder(vocab, cell)
    features = torch.randn(6, 49, 1280)
    greedy_tokens, greedy_scores = greedy_search(decoder, features, vocab, max_len=12)
    beam_tokens, beam_scores = beam_search(decoder, features, vocab, beam_size=1, max_len=12)
    assert greedy_tokens == beam_tokens
    assert greedy_scores == pytest.approx(beam_scores, abs=1e-5)
    wide_tokens, _ = beam_search(decoder, features, vocab, beam_size=4, max_len=12)
    assert len(wide_tokens) == 6 and all(len(t) <= 12 for t in wide_tokens)


@pytest.mark.parametrize("seed", range(12))
def test_batched_beam_search_finds_the_same_captions(seed):
    torch.manual_seed(seed)
    vocab = Vocabulary.build(CAPTIONS, min_count=1)
    cell = ("gru", "lstm", "rnn")[seed % 3]
    decoder = tiny_decoder(vocab, cell)
    features = torch.randn(1 + seed % 7, 49, 1280) * (0.5 + seed % 3)
    beam, max_len = 1 + seed % 4, (5, 12, 20)[seed % 3]
    tokens, scores = beam_search(decoder, features, vocab, beam_size=beam, max_len=max_len)
    batched = beam_search_batched(decoder, features, vocab, beam_size=beam, max_len=max_len)
    assert batched[0] == tokens
    assert batched[1] == pytest.approx(scores, abs=1e-5)


def test_batched_beam_search_captions_photos_as_the_loop_does(shipped):
    torch.manual_seed(2)
    features = noisy_sample_features(shipped, copies=3, noise=0.4)
    tokens, scores = beam_search(shipped.decoder, features, shipped.vocab, beam_size=3)
    batched = beam_search_batched(shipped.decoder, features, shipped.vocab, beam_size=3)
    assert batched[0] == tokens and len({tuple(t) for t in tokens}) > 5
    assert batched[1] == pytest.approx(scores, abs=1e-4)


def test_beam_search_captions_an_image_as_if_it_were_alone(shipped):
    # Images leave the batch when their search is done; the others must not notice.
    torch.manual_seed(1)
    features = noisy_sample_features(shipped, copies=2, noise=0.5)
    batch_tokens, batch_scores = beam_search(shipped.decoder, features, shipped.vocab, beam_size=3)
    for i in range(len(features)):
        tokens, scores = beam_search(shipped.decoder, features[i:i + 1], shipped.vocab, beam_size=3)
        assert tokens[0] == batch_tokens[i]
        assert scores[0] == pytest.approx(batch_scores[i], abs=1e-4)
    assert len({tuple(t) for t in batch_tokens}) > 1  # the images differ


def test_checkpoint_round_trip(tmp_path):
    vocab = Vocabulary.build(CAPTIONS, min_count=1)
    decoder = tiny_decoder(vocab, "lstm")
    path = tmp_path / "m.pt"
    save_checkpoint(path, decoder, vocab, {"model_id": "test"}, half=False)
    loaded, loaded_vocab, meta = load_checkpoint(path)
    assert meta == {"model_id": "test"}
    assert loaded_vocab.words == vocab.words
    assert loaded.config == decoder.config
    features = torch.randn(3, 49, 1280)
    assert greedy_search(loaded, features, vocab) == greedy_search(decoder, features, vocab)


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(ModelError, match=r"missing\.pt: no such model checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ModelError, match=r"junk\.pt: not a readable checkpoint"):
        load_checkpoint(junk)


def test_deferred_captioner_loads_on_first_use_only():
    real = FakeCaptioner()
    loads = []
    deferred = DeferredCaptioner(real.weights_hash, lambda: loads.append(1) or real)
    assert deferred.weights_hash == real.weights_hash and loads == []  # enough to plan a run
    assert (deferred.model_id, deferred.decoding) == (real.model_id, real.decoding)
    assert deferred.caption_batch == real.caption_batch and loads == [1]
    with pytest.raises(ModelError, match=r"m\.pt: the file changed while capindex ran"):
        _ = DeferredCaptioner("another hash", lambda: real, source="m.pt").model_id


def test_deferred_captioner_says_where_the_model_runs_without_loading_it():
    real = FakeCaptioner()
    loads = []
    deferred = DeferredCaptioner(real.weights_hash, lambda: loads.append(1) or real,
                                 place=lambda: load_placement("cpu"))
    assert deferred.placement() == ("cpu", None) and loads == []
    # without `place`, only the loaded model can say
    assert DeferredCaptioner(real.weights_hash, lambda: loads.append(1) or real).placement() \
        == ("cpu", None) and loads == [1]


def test_shipped_checkpoint_captions_a_sample_image(shipped):
    assert DEFAULT_CHECKPOINT.is_file()
    photos = torch.stack([image_tensor(SAMPLES / "camera.jpg"), image_tensor(SAMPLES / "chelsea.jpg")])
    camera, cat = shipped.caption_batch(photos)
    assert "camera" in camera.text.split()  # a photographer with a camera on a tripod
    assert -5.0 < camera.score < 0.0
    assert cat.tags[0][0] in {"tabby", "tiger cat", "Egyptian cat"}
    assert shipped.decoding == {"method": "beam", "beam_size": 3, "max_len": 20,
                                "guide": asdict(shipped_guide())}


def test_full_size_photo_gets_the_caption_of_its_small_copy(shipped, tmp_path):
    """A 4000x3000 JPEG (decoded at reduced size) and a lossless 224x224 copy of the same
    frame reach the encoder as nearly the same tensor and get the same caption."""
    big, small = [], []
    for i, sample in enumerate(sorted(SAMPLES.glob("*.jpg"))):
        photo = Image.open(sample).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)
        photo.save(tmp_path / f"{i}.jpg", quality=92)
        photo.resize((224, 224), Image.Resampling.BICUBIC).save(tmp_path / f"{i}.png")
        big.append(image_tensor(tmp_path / f"{i}.jpg"))
        small.append(image_tensor(tmp_path / f"{i}.png"))
    big, small = torch.stack(big), torch.stack(small)
    assert big.shape == small.shape == (len(big), 3, 224, 224)
    assert (big - small).abs().mean() < 0.005  # pixels scaled to [-1, 1]
    assert [c.text for c in shipped.caption_batch(big)] == [c.text for c in shipped.caption_batch(small)]


@pytest.mark.skipif(int(PIL.__version__.split(".")[0]) < 13,
                    reason="Pillow 13 chose the order of the two passes the model was trained with")
@pytest.mark.parametrize("size", [(500, 375), (375, 500), (1000, 750), (750, 1000), (225, 300),
                                  (300, 376), (300, 377), (230, 600), (150, 300), (300, 150),
                                  (100, 80), (224, 224)])
def test_resize_computes_pillows_bicubic(size):
    """The training images were squashed with Pillow's resize; the faster torch kernel must
    give the same input. On a black-and-white pattern every pass clips at 0 and 255, so the
    order of the two passes shows: the wrong order is off by up to 28 levels."""
    pattern = np.random.default_rng(0).random((size[1], size[0], 1)) > 0.5
    img = Image.fromarray((pattern * 255).astype(np.uint8).repeat(3, axis=2))
    expected = to_pixels(img.resize((224, 224), Image.Resampling.BICUBIC, reducing_gap=None))
    got = resize(to_pixels(img))
    assert got.shape == (3, 224, 224) and got.dtype == torch.uint8
    diff = (got.int() - expected.int()).abs()
    assert diff.max() <= 2 and (diff > 1).float().mean() < 0.001  # rounding of the fixed-point sums


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (400, 200), "white")
    img.paste((255, 0, 0), (0, 0, 200, 200))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW when shown
    img.save(tmp_path / "rot.jpg", exif=exif)
    shown = to_image(load_pixels(tmp_path / "rot.jpg"))
    assert shown.getpixel((112, 20))[0] > 200 and shown.getpixel((112, 20))[1] < 60  # red on top
    assert shown.getpixel((112, 200))[1] > 200  # white below
