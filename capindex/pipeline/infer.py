"""Stage 3, wherever it runs: one decoded batch -> what the models say about each image.

    work = [work_for(task, detector_id, embedding_id) for each item]   # on the driver
    inferred = run_models(batch, work, captioner, detector, provenance)  # where the model is

The local engine calls `run_models` in its main process, the Ray engine in its model actors
(`ray_engine.py`); either way the rows are then built from `Inferred` by the one writer
(`ingest.batch_changes`), so both engines write the same rows. No torch is imported here.
With the captioner on a GPU, the batch's pixels are copied there once, before the detector,
which then letterboxes and detects them there (`detect.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from capindex.pipeline.caption import CaptionerLike, caption_images, placement
from capindex.pipeline.detect import DeferredDetector, detect_objects

if TYPE_CHECKING:
    from capindex.pipeline.decode import DecodedBatch
    from capindex.pipeline.plan import Task


@dataclass(frozen=True)
class Work:
    """What the models must do for one planned file, if it turns out to be an image."""

    caption: bool  # caption it (with its vector): a new, changed, recaptioned or retried file
    detect: bool  # find its objects
    embed: bool  # its vector alone: an unchanged row whose vector another embedding made
    # Instead, when the file turns out to hold content catalogued under a row whose objects
    # or vector are outdated (moved, touched: decoded only then, `Plan.enrich_hashes`):
    # that row's caption is kept, its objects and vector are made again (both: which one
    # is outdated is known per row, and a moved file's row only when it is placed).
    if_reused: Work | None = None


def work_for(task: Task, detector_id: str | None, embedding_id: str | None) -> Work:
    """An "enrich" task keeps its caption and needs only what its row lacks (`plan.py`)."""
    if task.reason == "enrich":
        return Work(caption=False,
                    detect=detector_id is not None and task.old.detector_id != detector_id,
                    embed=embedding_id is not None and task.old.embedding_model != embedding_id)
    return Work(caption=True, detect=detector_id is not None, embed=False,
                if_reused=Work(caption=False, detect=detector_id is not None,
                               embed=embedding_id is not None))


@dataclass
class Inferred:
    """The models' output for a batch, keyed by position among the batch's decoded images."""

    captions: dict[int, dict] = field(default_factory=dict)  # the row's caption columns
    objects: dict[int, tuple[list[dict] | None, str | None]] = field(default_factory=dict)
    vectors: dict = field(default_factory=dict)  # position -> (vector, concept words), embed only
    made_by: dict | None = None  # the captions' provenance columns, when any were made
    notes: list[str] = field(default_factory=list)  # for the user (the detector's fallback)


def run_models(batch: DecodedBatch, work: Sequence[Work], captioner: CaptionerLike,
               detector: DeferredDetector | None,
               provenance: Callable[[], dict]) -> Inferred:
    """Caption, detect and embed the images of `batch` as `work` (one per item) asks.

    `provenance()` gives the captions' provenance columns; a `DeferredCaptioner` loads its
    model when it is first called (the local engine counts that time apart)."""
    imaged = [(item, (w.if_reused or w) if item.reused else w)  # batch.images' rows
              for item, w in zip(batch.items, work) if item.has_image]
    out = Inferred()
    images = batch.images
    device = placement(captioner)[0] if images is not None else "cpu"
    if device.startswith("cuda"):
        images = images.to(device, non_blocking=True)

    def images_of(positions: list[int]):
        return images if len(positions) == len(imaged) else images[positions]

    # The detector first: a guided captioner (model/guide.py) words captions after the objects.
    to_detect = [k for k, (_, w) in enumerate(imaged) if w.detect and detector is not None]
    if to_detect:
        sizes = [(imaged[k][0].meta["width"], imaged[k][0].meta["height"]) for k in to_detect]
        out.objects = dict(zip(to_detect, detect_objects(detector, images_of(to_detect), sizes)))
        out.notes = detector.take_notes()
    to_caption = [k for k, (_, w) in enumerate(imaged) if w.caption]
    if to_caption:
        out.made_by = provenance()
        objects = None
        if detector is not None and getattr(captioner, "guide", None) is not None:
            objects = [(out.objects.get(k) or (None, None))[0] or [] for k in to_caption]
        out.captions = dict(zip(to_caption, caption_images(captioner, images_of(to_caption),
                                                           objects)))
    to_embed = [k for k, (_, w) in enumerate(imaged) if w.embed]
    if to_embed:  # the encoder and the embedding only: the caption is kept
        vectors = captioner.embed_batch(images_of(to_embed))
        tagger = getattr(captioner, "concept_words", None)  # absent on test doubles
        words = tagger(vectors) if tagger else [None] * len(vectors)
        out.vectors = dict(zip(to_embed, zip(vectors, words)))
    return out
