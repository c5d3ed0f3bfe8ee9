"""Run the object detector once over a dataset's images and cache what it finds (JSON).

Each image is read as ingest reads it (`pipeline.decode.load_image`: 224x224 pixels) and
the detector's letterbox is made from those pixels stretched back to the photo's shape,
as `pipeline.detect.detect_objects` does, so evaluation sees the objects ingest would.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def cached_detections(image_dir: Path, names: list[str], cache_dir: Path) -> dict[str, list[dict]]:
    """name -> the shipped detector's detections (dicts, surest first), computed once."""
    from capindex.model import DEFAULT_DETECTOR, checkpoint_sha256

    digest = checkpoint_sha256(DEFAULT_DETECTOR)
    key = hashlib.sha256("\n".join([digest, str(image_dir.resolve()), *names]).encode())
    cache = Path(cache_dir) / f"{image_dir.parent.name}-detections-{key.hexdigest()[:12]}.json"
    if cache.is_file():
        return json.loads(cache.read_text(encoding="utf-8"))
    from capindex.pipeline.decode import load_image
    from capindex.pipeline.detect import detect_objects, load_detector

    detector = load_detector()
    found = {}
    for name in names:
        meta, pixels = load_image(str(image_dir / name))
        ((objects, _),) = detect_objects(detector, pixels.unsqueeze(0),
                                         [(meta["width"], meta["height"])])
        found[name] = objects or []
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.with_suffix(".tmp").write_text(json.dumps(found), encoding="utf-8")
    cache.with_suffix(".tmp").replace(cache)
    return found
