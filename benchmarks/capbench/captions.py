"""Generated captions and queries, for the search index and the instant captioner.

Subjects, places and the rest are drawn with Zipf-like weights, so that a few words are
common (in most captions) and most are rare, as in a real library's captions.
"""

from __future__ import annotations

import random

_SUBJECTS = ["man", "woman", "dog", "child", "boy", "girl", "people", "group of people",
             "black dog", "brown dog", "white dog", "cat", "bird", "horse", "cyclist", "skier",
             "surfer", "climber", "player", "crowd", "baby", "couple", "cow", "sheep", "car",
             "truck", "bus", "train", "boat", "plane", "rocket", "astronaut", "cup of coffee",
             "old camera", "motorbike", "snowboarder", "swimmer", "runner", "puppy", "kitten"]
_ADJECTIVES = ["young", "little", "old", "smiling", "small", "large", "red", "blue", "green",
               "yellow", "black", "white", "brown", "wet", "happy", "tall"]
_VERBS = ["runs", "jumps", "sits", "stands", "walks", "plays", "rides", "climbs", "swims",
          "looks", "lies", "waits", "smiles", "poses", "races", "flies", "drives", "holds"]
_PLACES = ["on the grass", "on a beach", "in the water", "in the snow", "on the street",
           "in a field", "on a rock", "in front of a building", "near a lake", "in the park",
           "on a bench", "down a hill", "on a table", "in the sky", "on the road",
           "in a kitchen", "at night", "under a tree", "by the sea", "in the mountains"]
_WITH = ["", "", "", " with a ball", " with a stick", " in a red shirt", " with a frisbee",
         " wearing a hat", " with sunglasses", " next to a fence", " holding a flag"]


def _zipf(rng: random.Random, words: list[str]) -> str:
    return rng.choices(words, weights=[1 / (i + 1) for i in range(len(words))])[0]


def make_caption(rng: random.Random) -> str:
    adjective = _zipf(rng, _ADJECTIVES) + " " if rng.random() < 0.5 else ""
    return (f"a {adjective}{_zipf(rng, _SUBJECTS)} {_zipf(rng, _VERBS)} "
            f"{_zipf(rng, _PLACES)}{_zipf(rng, _WITH)}")


def make_query(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.4:
        return _zipf(rng, _SUBJECTS).split()[-1]
    if kind < 0.8:
        return f"{_zipf(rng, _SUBJECTS).split()[-1]} {_zipf(rng, _PLACES).split()[-1]}"
    return f"{_zipf(rng, _SUBJECTS)} {_zipf(rng, _PLACES)}"


# What the detector would name for a subject (COCO's classes); others find no object.
_OBJECT_OF = {"man": "person", "woman": "person", "child": "person", "boy": "person",
              "girl": "person", "people": "person", "cyclist": "bicycle", "skier": "skis",
              "surfer": "surfboard", "player": "person", "crowd": "person", "baby": "person",
              "couple": "person", "runner": "person", "swimmer": "person", "climber": "person",
              "snowboarder": "snowboard", "dog": "dog", "puppy": "dog", "cat": "cat",
              "kitten": "cat", "bird": "bird", "horse": "horse", "cow": "cow", "sheep": "sheep",
              "car": "car", "truck": "truck", "bus": "bus", "train": "train", "boat": "boat",
              "plane": "airplane", "coffee": "cup", "motorbike": "motorcycle"}
_EXTRA_OBJECTS = ["person", "car", "chair", "bottle", "cup", "dog", "bench", "handbag",
                  "backpack", "umbrella", "bicycle", "potted plant", "sports ball", "kite"]


def make_alternates(rng: random.Random, caption: str, count: int = 2) -> list[str]:
    """The beam's next best captions: the same subject, another verb or place."""
    words = caption.split()
    out = []
    for _ in range(count):
        changed = list(words)
        changed[-1] = _zipf(rng, _PLACES).split()[-1]
        out.append(" ".join(changed))
    return out


def make_objects(rng: random.Random, caption: str) -> list[dict]:
    """Detected objects: the subject's COCO class (sometimes two of it) and a few others."""
    found = [label for word, label in _OBJECT_OF.items() if f" {word} " in f" {caption} "][:1]
    if found and rng.random() < 0.3:
        found.append(found[0])
    found += [_zipf(rng, _EXTRA_OBJECTS) for _ in range(rng.choice([0, 0, 1, 1, 2, 3]))]
    return [{"label": label, "score": round(rng.uniform(0.3, 0.95), 3), "box": [0.0, 0.0, 10.0, 10.0]}
            for label in found]
