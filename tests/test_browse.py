"""What a photo browser asks of the library: search filters and pages, counts, photo
records and files, thumbnails, similar photos, filter menus, and captioning an upload."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import date

import numpy as np
import pytest
from fakes import FakeCaption, FakeCaptioner, exif_rotated_jpeg, huge_png
from PIL import Image

import capindex
from capindex.errors import ImageUnreadable
from capindex.model import EMBEDDING_DIM, embedding_id
from capindex.model.detector import Detection
from capindex.pipeline.detect import DeferredDetector
from capindex.search.filters import Filters

# name: (colour, size, camera make, camera model, taken)
PHOTOS = {
    "a_red.jpg": ((220, 20, 20), (64, 48), "Canon", "Canon EOS 5D", "2019:06:01 10:00:00"),
    "b_maroon.jpg": ((150, 10, 10), (64, 48), "Canon", "Canon EOS R", "2020:03:01 08:00:00"),
    "c_blue.jpg": ((20, 20, 220), (66, 48), "NIKON CORPORATION", "NIKON D750",
                   "2019:12:31 23:30:00"),
    "d_green.png": ((20, 220, 20), (66, 48), None, None, None),
    "e_gray.jpg": ((128, 128, 128), (66, 48), None, None, "2018:01:01 12:00:00"),
}


@dataclass(frozen=True)
class VectorCaption(FakeCaption):
    embedding: np.ndarray | None = None


class VectorCaptioner(FakeCaptioner):
    """The fake captioner, with each image's vector: its mean colour, in the shipped
    embedding's name (so search takes the vectors as its own)."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding_id = embedding_id()

    def caption_batch(self, images):
        captions = super().caption_batch(images)
        out = []
        for caption, image in zip(captions, self.batches[-1]):
            vector = np.zeros(EMBEDDING_DIM, np.float32)
            vector[:3] = image.mean(dim=(1, 2)).numpy() + 1  # colour, from [-1, 1] to [0, 2]
            out.append(VectorCaption(caption.text, caption.score, caption.tags,
                                     vector / np.linalg.norm(vector)))
        return out


class SizeDetector:
    """Detects a dog in photos 64 pixels wide, a cat in the others."""

    input_size = 416

    def detect_batch(self, pixels, ratios, sizes):
        return [[Detection("dog" if w == 64 else "cat", 0.9, (0.0, 0.0, float(w), float(h)))]
                for w, h in sizes]


def fake_detector() -> DeferredDetector:
    return DeferredDetector("size-detector@1", SizeDetector)


def photo(path, colour, size, make=None, model=None, taken=None):
    exif = Image.Exif()
    if make:
        exif[0x010F], exif[0x0110] = make, model
    if taken:
        exif.get_ifd(0x8769)[0x9003] = taken
    Image.new("RGB", size, colour).save(path, exif=exif)
    return path


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "album"
    root.mkdir()
    for name, spec in PHOTOS.items():
        photo(root / name, *spec)
    return root


@pytest.fixture
def lib(tmp_path, folder):
    library = capindex.Library(tmp_path / "lib")
    summary = library.ingest([folder], captioner=VectorCaptioner(), detector=fake_detector(),
                             workers=0)
    assert summary.new == 5
    return library


def names(hits) -> list[str]:
    return [h.path.rsplit("/", 1)[-1] for h in hits]


def ids(lib) -> dict[str, int]:
    return {name: hit.id for name, hit in zip(names(lib.search("")), lib.search(""))}


@pytest.mark.parametrize("filters, expected", [
    (Filters(camera="nikon"), ["c_blue.jpg"]),
    (Filters(camera="CANON eos"), ["a_red.jpg", "b_maroon.jpg"]),
    (Filters(after=date(2019, 1, 1), before=date(2019, 12, 31)), ["a_red.jpg", "c_blue.jpg"]),
    (Filters(after=date(2020, 1, 1)), ["b_maroon.jpg"]),
    (Filters(before=date(2019, 6, 1)), ["a_red.jpg", "e_gray.jpg"]),
    (Filters(object="DOG"), ["a_red.jpg", "b_maroon.jpg"]),
    (Filters(object="do"), []),  # a label, not a part of one
    (Filters(tag="Blue"), ["c_blue.jpg"]),
    (Filters(camera="canon", after=date(2020, 1, 1)), ["b_maroon.jpg"]),
    (Filters(camera=" ", tag=""), ["a_red.jpg", "b_maroon.jpg", "c_blue.jpg", "d_green.png",
                                   "e_gray.jpg"]),
])
def test_filters_pick_the_photos_in_every_mode_and_count_them(lib, folder, filters, expected):
    keyword = lib.search("picture", 10, mode="keyword", filters=filters)
    assert sorted(names(keyword)) == expected
    assert lib.count("picture", mode="keyword", filters=filters) == len(expected)
    like = lib.search("", 10, like=str(folder / "a_red.jpg"), filters=filters)
    assert sorted(names(like)) == expected
    assert lib.count("", like=str(folder / "a_red.jpg"), filters=filters) == len(expected)
    assert sorted(names(lib.search("", 10, filters=filters))) == expected
    assert lib.count("", filters=filters) == len(expected)


def test_filters_apply_before_the_limit(lib):
    # "picture" ties on every photo: unfiltered, the first catalogued wins the one place
    assert names(lib.search("picture", 1, mode="keyword")) == ["a_red.jpg"]
    assert names(lib.search("picture", 1, mode="keyword", filters=Filters(camera="nikon"))) \
        == ["c_blue.jpg"]
    assert names(lib.search("picture", 1, mode="keyword", filters=Filters(object="cat"),
                            offset=2)) == ["e_gray.jpg"]


def test_hybrid_and_semantic_search_filter_and_page(lib, monkeypatch):
    from capindex.search import semantic

    red = np.zeros(EMBEDDING_DIM, np.float32)
    red[0] = 1.0
    monkeypatch.setattr(semantic, "query_vector", lambda text, path=None: red)
    semantic_hits = lib.search("reddish things", 10, mode="semantic")
    assert names(semantic_hits)[:2] == ["b_maroon.jpg", "a_red.jpg"]
    assert lib.count("reddish things", mode="semantic") == 5
    assert names(lib.search("reddish things", 2, mode="semantic", offset=2)) == \
        names(semantic_hits)[2:4]
    only_cats = Filters(object="cat")
    assert names(lib.search("reddish things", 10, mode="semantic", filters=only_cats)) == \
        [n for n in names(semantic_hits) if n in ("c_blue.jpg", "d_green.png", "e_gray.jpg")]
    hybrid = lib.search("red picture", 10, filters=only_cats)
    assert sorted(names(hybrid)) == ["c_blue.jpg", "d_green.png", "e_gray.jpg"]
    assert lib.count("red picture", filters=only_cats) == 3
    assert hybrid[0].keyword_score is not None and hybrid[0].vector_score is not None
    pages = lib.search("red picture", 2) + lib.search("red picture", 2, offset=2) + \
        lib.search("red picture", 2, offset=4)
    assert [h.id for h in pages] == [h.id for h in lib.search("red picture", 6)]
    assert [h.rank for h in pages] == [1, 2, 3, 4, 5]


PAGE_CASES = [
    ("red picture", {}), ("red picture", {"mode": "semantic"}), ("picture", {"mode": "keyword"}),
    ("picture -cat", {}), ("", {}), ("picture", {"mode": "keyword", "filters": Filters(object="cat")}),
    ("red picture", {"filters": Filters(camera="canon")}), ("", {"filters": Filters(object="dog")}),
]


def test_a_page_gets_the_hits_and_count_of_search_from_one_ranking(lib, monkeypatch):
    from capindex.search import semantic
    from capindex.store.keyword import KeywordIndex

    red = np.zeros(EMBEDDING_DIM, np.float32)
    red[0] = 1.0
    monkeypatch.setattr(semantic, "query_vector", lambda text, path=None: red)
    search, searches = KeywordIndex.search, []
    for query, options in PAGE_CASES:
        for limit, offset in ((2, 0), (2, 2), (2, 4), (10, 0), (3, 6)):
            hits, count = lib.search_page(query, limit, offset=offset, **options)
            assert hits == lib.search(query, limit, offset=offset, **options)
            assert count == lib.count(query, limit=limit, **options)
        with monkeypatch.context() as patch:
            patch.setattr(KeywordIndex, "search",
                          lambda *a, q=query, **k: searches.append(q) or search(*a, **k))
            patch.setattr(KeywordIndex, "count", lambda *a, **k: pytest.fail("counted again"))
            hits, count = lib.search_page(query, 10, **options)  # the page holds every match
        assert count == len(hits)
    # the keyword side ranked once a page, and only where it takes part
    assert searches == [q for q, options in PAGE_CASES if q and options.get("mode") != "semantic"]
    for query in ("red picture -cat", "red picture NOT cat", "red ANDNOT cat"):  # every mode
        for mode in ("hybrid", "semantic"):
            assert sorted(names(lib.search(query, 10, mode=mode))) == ["a_red.jpg", "b_maroon.jpg"]


def test_an_empty_query_lists_newest_taken_first_in_pages(lib):
    everything = lib.search("", 10)
    assert names(everything) == ["b_maroon.jpg", "c_blue.jpg", "a_red.jpg", "e_gray.jpg",
                                 "d_green.png"]  # no capture time: last
    page = lib.search("", 2, offset=2)
    assert names(page) == ["a_red.jpg", "e_gray.jpg"] and [h.rank for h in page] == [3, 4]
    assert lib.count("") == 5 and lib.search("", 10, offset=5) == []
    keyword_pages = [h.id for k in range(3) for h in
                     lib.search("picture", 2, mode="keyword", offset=2 * k)]
    assert keyword_pages == [h.id for h in lib.search("picture", 6, mode="keyword")]
    assert len(set(keyword_pages)) == 5


def test_filters_refuse_an_empty_date_range():
    with pytest.raises(ValueError, match="the date range is empty"):
        Filters(after=date(2020, 1, 2), before=date(2020, 1, 1))
    assert Filters().is_empty() and Filters(camera="  ").is_empty()
    assert Filters(tag=" x ").as_kwargs() == {"tag": "x"}


def test_photo_and_its_file(lib, folder):
    red = ids(lib)["a_red.jpg"]
    record = lib.photo(red)
    assert (record["id"], record["path"], record["camera_model"]) == (
        red, str(folder / "a_red.jpg"), "Canon EOS 5D")
    assert record["taken_at"] == "2019-06-01T10:00:00"
    assert record["objects"] == [{"label": "dog", "score": 0.9, "box": [0.0, 0.0, 64.0, 48.0]}]
    json.dumps(record)
    assert lib.photo_path(red) == folder / "a_red.jpg"
    (folder / "a_red.jpg").unlink()
    assert lib.photo_path(red) is None and lib.thumbnail(red) is None
    assert lib.photo_path(12345) is None


def test_a_catalogued_name_that_is_not_utf8_gives_its_file(tmp_path, fake):
    root = tmp_path / "odd"
    root.mkdir()
    raw = os.path.join(os.fsencode(root), b"caf\xe9.jpg")
    Image.new("RGB", (32, 32), (200, 10, 10)).save(os.fsdecode(raw), format="JPEG")
    lib = capindex.Library(tmp_path / "lib")
    lib.ingest([root], captioner=fake, workers=0)
    (hit,) = lib.search("red", mode="keyword")
    assert hit.path.endswith("caf\\xe9.jpg")
    assert os.fsencode(lib.photo_path(hit.id)) == raw
    assert lib.thumbnail(hit.id) is not None


def test_similar_photos_by_vector(lib, fake, tmp_path, photos):
    by_name = ids(lib)
    similar = lib.similar(by_name["a_red.jpg"], 3)
    assert names(similar)[0] == "b_maroon.jpg" and "a_red.jpg" not in names(similar)
    assert len(similar) == 3 and similar[0].vector_score > similar[-1].vector_score
    assert names(lib.similar(by_name["a_red.jpg"], 10, filters=Filters(object="cat")))[-1] \
        in ("c_blue.jpg", "d_green.png")
    assert lib.similar(999) == []
    plain = capindex.Library(tmp_path / "plain")  # captioned without vectors
    plain.ingest([photos], captioner=fake, workers=0)
    assert plain.similar(plain.search("red", mode="keyword")[0].id) == []


def test_thumbnails_are_made_once_upright_and_small(lib, folder, tmp_path, fake):
    red = ids(lib)["a_red.jpg"]
    thumb = lib.thumbnail(red)
    record = lib.photo(red)
    assert thumb == lib.dir.thumbs_dir / f"{record['sha256']}-320.jpg"
    with Image.open(thumb) as img:
        assert (img.format, img.size) == ("JPEG", (64, 48))  # never enlarged
    made = thumb.stat().st_mtime_ns
    assert lib.thumbnail(red) == thumb and thumb.stat().st_mtime_ns == made
    small = lib.thumbnail(red, 16)
    with Image.open(small) as img:
        assert img.size == (16, 12)
    with pytest.raises(ValueError, match="size must be 16 to 2048 pixels"):
        lib.thumbnail(red, 4000)
    assert not list(lib.dir.thumbs_dir.glob("*.partial")) and not list(
        lib.dir.thumbs_dir.glob(".*"))

    other = tmp_path / "other"
    other.mkdir()
    exif_rotated_jpeg(other / "rotated.jpg")  # 80x40 stored, 40x80 displayed
    big = other / "big.jpg"
    Image.new("RGB", (1200, 900), (10, 10, 200)).save(big)
    lib.ingest([other], captioner=fake, workers=0)
    by_name = {h.path.rsplit("/", 1)[-1]: h.id for h in lib.search("", 10)}
    with Image.open(lib.thumbnail(by_name["rotated.jpg"])) as img:
        assert img.size == (40, 80)
        assert img.getpixel((20, 10))[0] > 150  # red on top, as displayed
    with Image.open(lib.thumbnail(by_name["big.jpg"])) as img:
        assert img.size == (320, 240)


def test_a_thumbnail_refuses_a_decompression_bomb(lib, folder):
    red = ids(lib)["a_red.jpg"]
    huge_png(folder / "a_red.jpg", 30000, 30000)  # the file changed since it was catalogued
    assert lib.thumbnail(red) is None
    assert not lib.dir.thumbs_dir.exists() or not list(lib.dir.thumbs_dir.iterdir())


def test_a_read_only_library_keeps_thumbnails_in_the_user_cache(lib, tmp_path, monkeypatch):
    import capindex.pipeline.thumbnail as thumbnail

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    real_mkstemp = thumbnail.tempfile.mkstemp

    def mkstemp(dir, **kwargs):
        if str(dir).startswith(str(lib.root)):
            raise PermissionError(13, "Permission denied", str(dir))
        return real_mkstemp(dir=dir, **kwargs)

    monkeypatch.setattr(thumbnail.tempfile, "mkstemp", mkstemp)
    thumb = lib.thumbnail(ids(lib)["a_red.jpg"])
    assert thumb is not None and thumb.is_relative_to(tmp_path / "cache")


def test_facets_list_what_the_filters_can_choose(lib, folder, fake):
    facets = lib.facets()
    assert facets["cameras"] == [("Canon EOS 5D", 1), ("Canon EOS R", 1),
                                 ("NIKON CORPORATION NIKON D750", 1)]
    assert facets["objects"] == [("cat", 3), ("dog", 2)]
    assert facets["tags"][0] == ("picture frame", 5) and ("red thing", 2) in facets["tags"]
    assert facets["taken"] == ("2018-01-01", "2020-03-01")
    for name, _ in facets["cameras"]:  # each name, as a filter, finds its photos
        assert lib.count("", filters=Filters(camera=name)) == 1
    photo(folder / "f_new.jpg", (200, 200, 20), (70, 48), "Canon", "Canon EOS 5D",
          "2021:01:01 00:00:00")
    lib.ingest([folder], captioner=fake, workers=0)
    assert lib.facets()["cameras"][0] == ("Canon EOS 5D", 2)
    assert lib.facets()["taken"] == ("2018-01-01", "2021-01-01")


def test_describe_captions_an_upload_and_stores_nothing(lib, folder, fake, monkeypatch):
    import capindex.pipeline.caption as caption
    import capindex.pipeline.detect as detect

    before = lib.count("")
    loads = []
    monkeypatch.setattr(caption, "load_captioner",
                        lambda *a, **k: loads.append("captioner") or fake)
    monkeypatch.setattr(detect, "load_detector",
                        lambda *a, **k: loads.append("detector") or fake_detector())
    data = (folder / "c_blue.jpg").read_bytes()
    described = lib.describe(data)
    assert described == {"caption": "a dark blue picture", "alt_captions": [],
                         "tags": [{"label": "blue thing", "prob": 0.9},
                                  {"label": "picture frame", "prob": 0.05}],
                         "objects": [{"label": "cat", "score": 0.9, "box": [0.0, 0.0, 66.0, 48.0]}],
                         "width": 66, "height": 48, "format": "JPEG"}
    assert lib.describe(folder / "a_red.jpg")["objects"][0]["label"] == "dog"
    assert loads == ["captioner", "detector"]  # once per Library
    assert lib.count("") == before


def test_describe_refuses_what_ingest_refuses_in_one_line(lib, tmp_path, fake):
    detector = fake_detector()
    with pytest.raises(ImageUnreadable, match=r"^the image: not a readable image$"):
        lib.describe(b"not a picture", captioner=fake, detector=detector)
    with pytest.raises(ImageUnreadable, match=r"^the image: empty file$"):
        lib.describe(b"", captioner=fake, detector=detector)
    bomb = huge_png(tmp_path / "bomb.png", 30000, 30000)
    with pytest.raises(ImageUnreadable, match=r"image too large \(900,000,000 pixels; the limit "
                                              r"is 120,000,000\), possibly a decompression bomb"):
        lib.describe(bomb.read_bytes(), captioner=fake, detector=detector)
    with pytest.raises(ImageUnreadable, match=r"missing\.jpg: file not found"):
        lib.describe(tmp_path / "missing.jpg", captioner=fake, detector=detector)
    assert fake.captioned == 0


def test_capindex_search_filter_options(cli, folder, capindex_home):
    capindex.Library(capindex_home).ingest([folder], captioner=VectorCaptioner(),
                                           detector=fake_detector(), workers=0)
    result = cli("search", "picture", "--mode", "keyword", "--camera", "nikon")
    assert result.exit_code == 0 and result.stdout.count("\n") == 1 and "c_blue.jpg" in \
        result.stdout
    result = cli("search", "--after", "2019-01-01", "--before", "2019-12-31", "--json")
    assert [h["path"].rsplit("/", 1)[-1] for h in json.loads(result.stdout)] == [
        "c_blue.jpg", "a_red.jpg"]
    result = cli("search", "--object", "dog", "--offset", "1", "--json")
    assert [(h["rank"], h["path"].rsplit("/", 1)[-1]) for h in json.loads(result.stdout)] == [
        (2, "a_red.jpg")]
    result = cli("search", "--tag", "purple")
    assert (result.exit_code, result.stdout, result.stderr) == (
        0, "", "no images pass the filters\n")
    result = cli("search", "picture", "--mode", "keyword", "--tag", "purple", "--offset", "3")
    assert result.stderr == "no images match 'picture' and the filters after the first 3\n"


@pytest.mark.parametrize("args, message", [
    (["--after", "2019-13-01"], "Invalid value for '--after': '2019-13-01' does not match the "
                                "format '%Y-%m-%d'."),
    (["--after", "2020-01-02", "--before", "2020-01-01"],
     "Invalid value for '--after' / '--before': the date range is empty: after 2020-01-02 but "
     "before 2020-01-01"),
    (["--offset", "-1", "dog"], "Invalid value for '--offset': -1 is not in the range x>=0."),
    ([], "give a QUERY, --like PHOTO, or a filter (--after, --before, --camera, --object, --tag)"),
])
def test_capindex_search_refuses_bad_filters_before_work(cli, args, message):
    result = cli("search", *args)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == f"Error: {message}"
