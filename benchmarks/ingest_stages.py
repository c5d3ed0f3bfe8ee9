#!/usr/bin/env python
"""Where an ingest's model time goes with each search signal: CPU-ms per image per stage.

    PYTHONPATH=. python benchmarks/ingest_stages.py                       # sample_images/
    PYTHONPATH=. python benchmarks/ingest_stages.py --images DIR --count 64 --rounds 3

The images (from --images, repeated to --count) go through what `infer.run_models` does
with a batch, as `--batch` (16) images at a time, one stage at a time on the same decoded
224x224 pixels, in this process, torch and onnxruntime on one thread each (so CPU time is
work, not two threads spinning): the detector's letterbox (`letterbox_pixels`), its model
(`session.run`) and its decoding (NMS); the captioner's encoder, its plain beam search, the
shipped guided decoding given the ImageNet tags alone and given the tags and the objects
(the fallback's second search included), and the embedding (vector and concept words).
Rounds go through every stage in turn after an untimed warm-up; each figure is the median
round's process CPU time per image. Also: how many images the guide searched again. On a
machine others load, CPU time is the measure that holds; the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from PIL import Image, ImageOps

from capindex.model.captioner import Captioner
from capindex.model.detector import Detector, letterbox_pixels
from capindex.model.encoder import top_tags
from capindex.model.guide import GuideConfig
from capindex.model.preprocess import load_pixels

SUFFIXES = (".jpg", ".jpeg", ".png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path,
                        default=Path(__file__).resolve().parent.parent / "sample_images")
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    found = sorted(p for p in args.images.iterdir() if p.suffix.lower() in SUFFIXES)
    paths = [found[i % len(found)] for i in range(args.count)]
    sizes = []
    for path in paths:
        with Image.open(path) as img:
            sizes.append(ImageOps.exif_transpose(img).size)
    pixels = torch.stack([load_pixels(p) for p in paths])  # (N, 3, 224, 224) uint8
    batches = [(pixels[i:i + args.batch], sizes[i:i + args.batch])
               for i in range(0, len(paths), args.batch)]

    detector = Detector.load(threads=1)
    plain = Captioner.load(device="cpu", guide=GuideConfig())
    guided = Captioner.load(device="cpu", embedding=_embedding())  # the shipped guide
    state: dict = {}

    def letterboxes():
        state["boxes"] = [[letterbox_pixels(im, detector.input_size, original=s)
                           for im, s in zip(images, size)] for images, size in batches]

    def detector_model():
        state["raw"] = [[detector.session.run(None, {detector.input_name: b[None].flip(1)
                                                     .float().numpy()})[0][0]
                         for b, _ in boxes] for boxes in state["boxes"]]

    def detector_decode():
        state["objects"] = [[[d.to_dict() for d in detector._decode(
                                  *detector._candidates(out), r, s)]
                             for out, (_, r), s in zip(raw, boxes, size)]
                            for raw, boxes, (_, size) in zip(state["raw"], state["boxes"],
                                                             batches)]

    def encode():
        state["encoded"] = [plain.encode(images) for images, _ in batches]

    def search(captioner, objects: bool):
        def run():
            for k, (features, logits) in enumerate(state["encoded"]):
                captioner.caption_features(features, top_tags(logits, captioner.num_tags),
                                           state["objects"][k] if objects else None)
        return run

    def embed():
        for features, logits in state["encoded"]:
            vectors = guided.embedder.embed(features.float(), logits.float()).numpy()
            guided.embedder.concepts(vectors)

    stages = [("detector: letterbox from 224 pixels", letterboxes),
              ("detector: model (session.run)", detector_model),
              ("detector: decoding + NMS", detector_decode),
              ("captioner: encoder", encode),
              ("captioner: beam search, plain", search(plain, False)),
              ("captioner: guided, ImageNet tags", search(guided, False)),
              ("captioner: guided, tags + objects", search(guided, True)),
              ("embedding: vector + concepts", embed)]
    with torch.inference_mode():
        for _, fn in stages:  # warm-up, and each stage's inputs
            fn()
        load = os.getloadavg()[0]
        cpu: dict[str, list[float]] = {name: [] for name, _ in stages}
        for _ in range(args.rounds):
            for name, fn in stages:
                start = time.process_time()
                fn()
                cpu[name].append((time.process_time() - start) * 1000 / len(paths))
        again = _searched_again(guided, state)
    result = {"images": len(paths), "from": str(args.images), "batch": args.batch,
              "rounds": args.rounds, "detector_input": detector.input_size,
              "load_average": [round(load, 2), round(os.getloadavg()[0], 2)],
              "cpu_ms_per_image": {n: round(statistics.median(v), 2) for n, v in cpu.items()},
              "searched_again": again}
    print(f"{len(paths)} images from {args.images}, batch {args.batch}, {args.rounds} rounds, "
          f"one thread, detector input {detector.input_size}, load average "
          f"{load:.1f} before, {os.getloadavg()[0]:.1f} after")
    for name, values in cpu.items():
        print(f"  {name:40} {statistics.median(values):7.2f} CPU-ms/image "
              f"(rounds {', '.join(f'{v:.1f}' for v in values)})")
    print(f"  guided decoding searched again: {again['tags']} images of {len(paths)} "
          f"with the tags alone, {again['objects']} with the objects too")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


def _embedding():
    from capindex.model import DEFAULT_EMBEDDING

    return DEFAULT_EMBEDDING if DEFAULT_EMBEDDING.is_file() else None


def _searched_again(captioner: Captioner, state: dict) -> dict:
    """How many images the fallback guide searches a second time: those with a group and
    no word of it in the plain caption (as `Captioner.caption_features` decides)."""
    from capindex.model.decoding import beam_search

    counts = {"tags": 0, "objects": 0}
    for k, (features, logits) in enumerate(state["encoded"]):
        tags = top_tags(logits, captioner.num_tags)
        tokens = beam_search(captioner.decoder, features.float(), captioner.vocab,
                             captioner.beam_size, captioner.max_len,
                             n_best=captioner.beam_size)[0]
        for key, objects in (("tags", [[]] * len(tags)), ("objects", state["objects"][k])):
            for words, tag, objs in zip(tokens, tags, objects):
                groups = captioner.guide.groups(tag, objs)
                if groups and not set(words) & {w for g in groups for w in g}:
                    counts[key] += 1
    return counts


if __name__ == "__main__":
    main()
