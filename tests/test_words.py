"""WordNet word expansion: a search word finds the photo whose labels or caption use a
more specific word (capindex.words over the committed capindex/data/word_table.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from capindex.words import TABLE, expand_text, related_words, simple_singulars

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("term, expected", [
    ("tabby", {"cat", "animal", "pet"}),
    ("Egyptian cat", {"cat", "pet"}),
    ("golden retriever", {"dog", "animal", "pet"}),
    ("espresso", {"coffee", "drink"}),
    ("boy", {"child", "kid", "person"}),
    ("girl", {"child", "person"}),
    ("tv", {"television"}),
    ("cup", {"container"}),
])
def test_specific_terms_lead_to_the_words_people_search_for(term, expected):
    words = related_words(term)
    assert expected <= set(words), words


def test_the_expansion_leaves_out_the_term_and_stays_small():
    for term in ("tabby", "dog", "golden retriever", "boy", "tv"):
        words = related_words(term)
        assert term not in words
        assert 0 < len(words) <= 8
        assert len(set(words)) == len(words)


def test_unknown_terms_and_abstract_words_give_nothing():
    assert related_words("xyzzy") == ()
    assert related_words("") == ()
    assert related_words("the") == ()


def test_the_source_decides_between_meanings():
    assert "bird" in related_words("kite", source="imagenet")  # the hawk
    assert "toy" in related_words("kite", source="coco")  # the toy
    assert "toy" in related_words("kite", source="words")  # captions fly the toy
    assert "dog" in related_words("Cardigan", source="imagenet")  # the corgi
    assert "sweater" in related_words("cardigan", source="imagenet")
    with pytest.raises(ValueError):
        related_words("dog", source="flickr")


def test_labels_match_whatever_their_case():
    assert related_words("EGYPTIAN CAT") == related_words("Egyptian cat")
    assert related_words("  tabby ") == related_words("tabby")


def test_expand_text_gives_each_caption_words_broader_words_once():
    words = expand_text("A boy plays with two dogs")
    assert {"child", "kid", "person", "animal", "pet"} <= set(words)
    assert len(set(words)) == len(words)
    assert "a" not in words and "boy" not in words


def test_expand_text_finds_plurals_regular_and_irregular():
    assert set(related_words("puppy")) <= set(expand_text("three puppies"))
    assert set(related_words("box")) <= set(expand_text("boxes"))
    assert set(related_words("man")) <= set(expand_text("two men"))
    assert set(related_words("child")) <= set(expand_text("children on grass"))
    assert expand_text("") == []
    assert expand_text("of the and") == []


def test_simple_singulars():
    assert "puppy" in simple_singulars("puppies")
    assert "box" in simple_singulars("boxes")
    assert "dog" in simple_singulars("dogs")
    assert simple_singulars("grass") == ()


def test_table_covers_every_classifier_label_and_is_written_deterministically():
    text = TABLE.read_text(encoding="utf-8")
    table = json.loads(text)
    assert table["source"].startswith("WordNet 3.0")
    labels = (REPO / "capindex" / "model" / "imagenet_labels.txt").read_text().splitlines()
    assert sorted(table["imagenet"]) == sorted(labels)
    assert len(table["coco"]) == 80
    for section in ("imagenet", "coco", "words"):
        keys = list(table[section])
        assert keys == sorted(keys)
        for words in table[section].values():
            assert len(words) <= 8
            assert all(w == w.lower() and w.strip() == w for w in words)
    assert len(text.encode()) < 300_000
    assert (TABLE.parent / "WORDNET-LICENSE").read_text().count("Princeton University") >= 2
