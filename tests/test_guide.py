"""Guided decoding (labels -> caption words, boosted and constrained search), the CIDEr-D
reward and self-critical training."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from capindex.cli import main
from capindex.model import DEFAULT_CHECKPOINT
from capindex.model.checkpoint import load_checkpoint
from capindex.model.config import ModelConfig
from capindex.model.decoder import CaptionDecoder
from capindex.model.decoding import beam_search, constrained_beam_search, greedy_search
from capindex.model.guide import Guide, GuideConfig
from capindex.model.vocab import Vocabulary, tokenize
from capindex.training.cider import CiderD

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"
CAPTIONS = ["a dog runs on the grass", "a man rides a red bike down the road",
            "two children play in the water", "a cat sits on a sofa", "a cup of coffee"]


@pytest.fixture(scope="module")
def shipped_vocab():
    return load_checkpoint(DEFAULT_CHECKPOINT)[1]


def tiny(seed: int):
    torch.manual_seed(seed)
    vocab = Vocabulary.build(CAPTIONS, min_count=1)
    decoder = CaptionDecoder(ModelConfig(vocab_size=len(vocab), hidden_dim=32, embed_dim=16,
                                         attention_dim=16, project_dim=32)).eval()
    return decoder, vocab, torch.randn(5, 49, 1280)


def words_of(vocab, group) -> set[str]:
    return {vocab.words[i] for i in group}


def test_labels_map_to_their_names_narrower_words_and_plurals(shipped_vocab):
    guide = Guide(shipped_vocab, GuideConfig("boost"))
    cat = words_of(shipped_vocab, guide.group("Egyptian cat", "imagenet"))  # head noun
    assert {"cat", "cats", "kitten"} <= cat and "dog" not in cat
    assert "coffee" in words_of(shipped_vocab, guide.group("espresso", "imagenet"))  # broader word
    person = words_of(shipped_vocab, guide.group("person", "coco"))  # WordNet hyponyms
    assert {"person", "man", "men", "woman", "women", "girl", "boy"} <= person
    assert "dog" not in person
    assert guide.group("cup", "coco") == guide.group("cup", "imagenet")


def test_only_confident_labels_guide_surest_first(shipped_vocab):
    guide = Guide(shipped_vocab, GuideConfig("boost", object_threshold=0.5, tag_threshold=0.6,
                                             max_groups=2))
    tags = [("Egyptian cat", 0.8), ("espresso", 0.55)]
    objects = [{"label": "cup", "score": 0.9}, {"label": "dog", "score": 0.4},
               {"label": "cup", "score": 0.7}]
    groups = guide.groups(tags, objects)
    assert [words_of(shipped_vocab, g) & {"cup", "cat", "coffee", "dog"} for g in groups] == [
        {"cup"}, {"cat"}]
    assert guide.groups([], []) == []


@pytest.mark.parametrize("seed", range(4))
def test_boost_of_zero_changes_nothing_and_a_large_boost_puts_the_word_in(seed):
    decoder, vocab, features = tiny(seed)
    plain = beam_search(decoder, features, vocab, beam_size=3, max_len=8)
    coffee = (vocab.index["coffee"],)
    guides = [[coffee]] * len(features)
    assert beam_search(decoder, features, vocab, 3, 8, guides=guides, bonus=0.0) == plain
    tokens, scores = beam_search(decoder, features, vocab, 3, 8, guides=guides, bonus=50.0)
    assert all(coffee[0] in t for t in tokens)
    assert all(t.count(coffee[0]) == 1 for t in tokens)  # the bonus stops once it is in
    assert all(s <= 0 for s in scores)  # the mean log-probability, without the bonus
    greedy, _ = greedy_search(decoder, features, vocab, 8, guides=guides, bonus=50.0)
    assert all(coffee[0] in t for t in greedy)


@pytest.mark.parametrize("seed", range(6))
def test_constrained_search_holds_a_guide_word_or_equals_plain_search(seed):
    decoder, vocab, features = tiny(seed)
    words = [vocab.index[w] for w in ("cat", "sofa", "bike")]
    guides = [[(words[0],), (words[1],)], [], [(words[2],)], [], [(words[1], words[2])]]
    tokens, _, others = constrained_beam_search(decoder, features, vocab, guides, 3, 12, n_best=3)
    plain, _, plain_others = beam_search(decoder, features, vocab, 3, 12, n_best=3)
    for b, groups in enumerate(guides):
        if groups:
            allowed = {w for g in groups for w in g}
            assert allowed & set(tokens[b]), (b, tokens[b])
        else:
            assert tokens[b] == plain[b] and others[b] == plain_others[b]


def test_fallback_keeps_plain_captions_that_hold_a_guide_word():
    from capindex.model.captioner import Captioner

    decoder, vocab, features = tiny(1)
    plain, _ = beam_search(decoder, features, vocab, 3, 12)
    present = plain[0][1] if len(plain[0]) > 1 else plain[0][0]  # a word image 0 already says
    absent = next(i for i in range(4, len(vocab)) if i not in plain[1])
    guides = [[(present,)], [(absent,)], [], [], []]
    captioner = Captioner(None, decoder, vocab, "tiny", "0" * 64, beam_size=3, max_len=12,
                          channels_last=False, guide=GuideConfig("fallback"))
    captioner.guide.groups = lambda tags, objects: guides.pop(0)
    got = captioner.caption_features(features)
    assert got[0].text == vocab.decode(plain[0])  # it held its guide word: kept
    assert vocab.words[absent] in got[1].text.split()  # searched again with the constraint
    assert [c.text for c in got[2:]] == [vocab.decode(t) for t in plain[2:]]


def test_cider_d_equals_coco_captions_scorer():
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.cider.cider import Cider

    rng = random.Random(0)
    refs = {str(i): [tokenize(" ".join(rng.choices([*CAPTIONS[i % 5].split(), "big", "small"],
                                                   k=rng.randint(3, 9))))
                     for _ in range(rng.randint(1, 5))] for i in range(30)}
    hyps = {k: rng.choice(rng.choice(list(refs.values()))) for k in refs}
    ours = CiderD(refs).scores(list(refs), [hyps[k] for k in refs])
    _, theirs = Cider().compute_score({k: [" ".join(r) for r in v] for k, v in refs.items()},
                                      {k: [" ".join(h)] for k, h in hyps.items()})
    assert ours == pytest.approx(list(theirs), abs=1e-9)
    assert max(ours) > 1.0  # some hypotheses match their references


def test_self_critical_training_raises_the_reward(tmp_path):
    """A few steps of SCST on one image make the sampled captions score higher."""
    from capindex.training.scst import _words, sample_captions

    decoder, vocab, features = tiny(0)
    features = features[:1]
    target = tokenize(CAPTIONS[3])
    cider = CiderD({"x": [target], "y": [tokenize(CAPTIONS[0])], "z": [tokenize(CAPTIONS[1])]})
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    rewards = []
    for _ in range(60):
        tokens, logp, mask = sample_captions(decoder, features, vocab, 8, 10, generator)
        reward = torch.tensor(cider.scores(["x"] * 8, _words(tokens, mask, vocab))).view(1, -1)
        baseline = (reward.sum(1, keepdim=True) - reward) / 7
        loss = -((reward - baseline).view(-1, 1) * logp * mask).sum() / mask.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        rewards.append(float(reward.mean()))
    assert sum(rewards[-10:]) > 1.5 * sum(rewards[:10])


@pytest.mark.skipif(not DEFAULT_CHECKPOINT.exists(), reason="no shipped model")
def test_shipped_model_names_what_is_in_the_sample_photos(shipped_vocab):
    """`capindex caption` as shipped (guided decoding, the detector's objects): the cat
    photo's caption says cat, the espresso's cup or coffee, the astronaut's a person."""
    names = ("chelsea.jpg", "coffee.jpg", "astronaut.jpg")
    result = CliRunner().invoke(main, ["caption", *(str(SAMPLES / n) for n in names), "--json",
                                       "--device", "cpu"])
    assert result.exit_code == 0, result.output
    said = {Path(row["path"]).name: set(tokenize(row["caption"]))
            for row in map(json.loads, result.stdout.splitlines())}
    assert "cat" in said["chelsea.jpg"], said
    assert said["coffee.jpg"] & {"cup", "coffee"}, said
    # a person: the word or a narrower one (WordNet: man, woman, astronaut...), or plural
    person = words_of(shipped_vocab, Guide(shipped_vocab, GuideConfig()).group("person", "coco"))
    assert said["astronaut.jpg"] & person, said


def test_ingest_loader_passes_its_guide_to_the_captioner(monkeypatch):
    """`load_captioner(guide=...)` (the benchmark's captions-alone way) decodes as told;
    without one, the shipped guide."""
    from capindex.model.captioner import Captioner
    from capindex.pipeline.caption import load_captioner

    asked = []

    def fake_load(path, **kwargs):
        asked.append(kwargs["guide"])
        raise RuntimeError("stop: the model itself is not needed here")

    monkeypatch.setattr(Captioner, "load", staticmethod(fake_load))
    for guide in (GuideConfig(), None):
        with pytest.raises(RuntimeError, match="stop"):
            load_captioner(embedding=False, guide=guide).caption_batch(None)
    assert asked == [GuideConfig(), None]  # None: Captioner.load uses shipped_guide()
