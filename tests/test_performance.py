"""The speed-ups keep results the same, and the GPU settings are chosen right (tested on CPU).

See docs/performance.md. No GPU is needed: device choices are checked through
the functions that make them and a fake captioner that claims to be on CUDA.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fakes import exif_rotated_jpeg
from PIL import Image

import capindex.model.encoder as encoder_module
from capindex.model.captioner import Captioner, autocast_dtype, load_placement, use_channels_last
from capindex.model.preprocess import image_tensor, normalize
from capindex.pipeline.caption import DeferredCaptioner
from capindex.pipeline.decode import DecodeDataset, decode_image, make_loader
from capindex.pipeline.options import (
    CPU_WORKER_PRIORITY,
    IngestOptions,
    default_workers,
    tuned_options,
)
from capindex.store.keyword import KeywordIndex

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"
CUDA, CPU = torch.device("cuda"), torch.device("cpu")


# -- the model: same outputs, faster ------------------------------------------------

def test_imagenet_labels_are_torchvisions():
    from torchvision.models import ResNet18_Weights

    assert encoder_module.imagenet_labels() == tuple(
        ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def test_inlined_padding_gives_the_packages_outputs_exactly(monkeypatch):
    images = torch.stack([image_tensor(SAMPLES / "chelsea.jpg"),
                          image_tensor(SAMPLES / "rocket.jpg")])
    fast = encoder_module.Encoder()
    monkeypatch.setattr(encoder_module, "_inline_same_padding", lambda net: None)
    plain = encoder_module.Encoder()
    assert sum(hasattr(m, "static_padding") for m in fast.modules()) == 5  # stride-2 ones left
    for a, b in zip(fast(images), plain(images)):
        assert torch.equal(a, b)


def test_channels_last_and_bf16_autocast_run_on_cpu(tiny_checkpoint):
    images = torch.stack([image_tensor(SAMPLES / "coffee.jpg"), image_tensor(SAMPLES / "camera.jpg")])
    default = Captioner.load(tiny_checkpoint, device="cpu")
    assert default.channels_last and default.autocast is None
    assert default.device_memory_gib is None  # a CPU: ingest picks the CPU's batch size
    plain = Captioner.load(tiny_checkpoint, device="cpu", channels_last=False)
    a, b = default.encoder(images.contiguous(memory_format=torch.channels_last)), plain.encoder(images)
    assert (a[0] - b[0]).abs().max() < 1e-4 and (a[1] - b[1]).abs().max() < 1e-4
    half = Captioner.load(tiny_checkpoint, device="cpu", precision="bf16")
    assert half.autocast is torch.bfloat16
    captions = half.caption_batch(images)
    assert len(captions) == 2 and captions[0].tags[0][0] == default.caption_batch(images)[0].tags[0][0]


def test_uint8_pixels_caption_as_their_normalised_floats(tiny_checkpoint):
    # The decode stage sends uint8 pixels; the captioner scales them on its device.
    pixels = torch.stack([decode_image((SAMPLES / name).read_bytes())[1]
                          for name in ("coffee.jpg", "camera.jpg")])
    captioner = Captioner.load(tiny_checkpoint, device="cpu")
    assert pixels.dtype == torch.uint8
    assert captioner.caption_batch(pixels) == captioner.caption_batch(normalize(pixels))


@pytest.mark.parametrize("precision, device, expected", [
    ("auto", CPU, None), ("fp32", CPU, None), ("bf16", CPU, torch.bfloat16), ("fp16", CPU, None),
    ("auto", CUDA, None), ("fp32", CUDA, None), ("bf16", CUDA, torch.bfloat16),
    ("fp16", CUDA, torch.float16),
])
def test_autocast_dtype(precision, device, expected):
    assert autocast_dtype(precision, device) is expected


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16"):
        autocast_dtype("int8", CPU)


def test_channels_last_by_default_on_cpu_only():
    assert use_channels_last(None, CPU)
    assert not use_channels_last(None, CUDA)
    assert not use_channels_last(False, CPU) and use_channels_last(True, CUDA)


# -- the data path ---------------------------------------------------------------------

def test_tuned_options_per_device():
    on_gpu = tuned_options(IngestOptions(), "cuda:0")
    assert not on_gpu.pin_memory and on_gpu.worker_priority == 0
    assert on_gpu.batch_size == 256 and on_gpu.workers == default_workers(model_on_gpu=True)
    assert tuned_options(IngestOptions(), "cuda:0", device_memory_gib=80).batch_size == 256
    assert tuned_options(IngestOptions(), "cuda:0", device_memory_gib=4).batch_size == 64
    on_cpu = tuned_options(IngestOptions(workers=3), "cpu")
    assert not on_cpu.pin_memory and on_cpu.worker_priority == CPU_WORKER_PRIORITY
    assert on_cpu.workers == 3 and on_cpu.batch_size == 16
    assert tuned_options(IngestOptions(batch_size=8), "cuda:0", 80).batch_size == 8
    assert tuned_options(IngestOptions(pin_memory=True), "cuda:0").pin_memory
    assert not tuned_options(IngestOptions(pin_memory=True), "cpu").pin_memory
    assert tuned_options(IngestOptions(), "cpu").workers == default_workers()
    assert [default_workers(n) for n in (1, 2, 64)] == [1, 2, 8]
    assert [default_workers(n, model_on_gpu=True) for n in (1, 2, 16, 64)] == [0, 1, 15, 16]


class GpuFake:
    """The captioner interface, on a CUDA device that this machine need not have."""

    model_id, weights_hash, decoding = "gpu-fake", "hash", {"method": "fake"}
    device = CUDA
    device_memory_gib = 4.0  # a small GPU: batches of SMALL_GPU_BATCH_SIZE


@pytest.mark.parametrize("captioner, flags, pinned, priority, batch", [
    (GpuFake(), [], False, 0, 64), (GpuFake(), ["--pin-memory"], True, 0, 64),
    (None, ["--pin-memory"], False, CPU_WORKER_PRIORITY, 16)])
def test_cli_tunes_the_data_path_for_the_models_device(cli, fake, photos, monkeypatch, captioner,
                                                       flags, pinned, priority, batch):
    seen = {}

    def loader(dataset, options):  # what ingest hands the decode stage, once it has files
        seen["options"] = options
        return iter(())

    monkeypatch.setattr("capindex.pipeline.ingest.decode_loader", loader)
    result = cli("ingest", photos, "--workers", "2", *flags, captioner=captioner or fake)
    assert result.exit_code == 0, result.output
    options = seen["options"]
    assert (options.pin_memory, options.worker_priority, options.workers) == (pinned, priority, 2)
    assert options.batch_size == batch


def test_a_deferred_model_on_a_gpu_tunes_the_data_path_without_loading(cli, fake, photos,
                                                                       monkeypatch):
    assert cli("ingest", photos, "--workers", "0").exit_code == 0
    os.rename(photos / "red.jpg", photos / "moved.jpg")  # a run that may need no model
    seen = {}

    def loader(dataset, options):
        seen["options"] = options
        return iter(())

    def must_not_load():
        raise AssertionError("the model was loaded")

    class Properties:  # an 80 GiB GPU, which this machine need not have
        total_memory = 80 * 2**30

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Properties())
    monkeypatch.setattr("capindex.pipeline.ingest.decode_loader", loader)
    assert load_placement("cuda") == ("cuda", 80.0) and load_placement("cpu") == ("cpu", None)
    deferred = DeferredCaptioner(fake.weights_hash, must_not_load,
                                 place=lambda: load_placement("cuda"))
    result = cli("ingest", photos, captioner=deferred)
    assert result.exit_code == 0, result.output
    options = seen["options"]
    assert options.batch_size == 256 and options.worker_priority == 0
    assert options.workers == default_workers(model_on_gpu=True)


def test_cli_passes_precision_and_threads(photos, monkeypatch, fake):
    from click.testing import CliRunner

    from capindex.cli import main

    calls = []

    def loader(model_path, device, **settings):
        calls.append(settings)
        return fake

    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append({"threads": n}))
    for extra in ([], ["--precision", "bf16", "--threads", "3"]):
        result = CliRunner().invoke(main, ["ingest", str(photos), "--workers", "0", *extra],
                                    obj={"load_captioner": loader})
        assert result.exit_code == 0, result.output
    assert calls == [{}, {"threads": 3}, {"precision": "bf16"}]


def test_decoding_from_one_open_file_equals_load_pixels(tmp_path):
    paths = [*sorted(SAMPLES.glob("*.jpg")), exif_rotated_jpeg(tmp_path / "rotated.jpg")]
    big = tmp_path / "big.jpg"
    Image.open(SAMPLES / "coffee.jpg").resize((4000, 3000)).save(big, quality=90)
    for path in [*paths, big]:
        meta, tensor = decode_image(path.read_bytes())
        assert tensor.dtype == torch.uint8 and torch.equal(normalize(tensor), image_tensor(path))
    assert meta["width"] == 4000  # the header's size, not the reduced decode's


def test_worker_batches_arrive_in_shared_memory_channels_last():
    paths = [str(p) for p in sorted(SAMPLES.glob("*.jpg"))]
    expected = torch.stack([image_tensor(p) for p in paths])
    batches = list(make_loader(DecodeDataset(paths), 2, workers=1, worker_priority=5))
    images = torch.cat([b.images for b in batches])
    assert images.dtype == torch.uint8  # a quarter of float32's bytes travel
    assert torch.equal(normalize(images), expected)
    assert all(b.images.is_shared() for b in batches)
    assert all(b.images.is_contiguous(memory_format=torch.channels_last) for b in batches)


# -- the search index --------------------------------------------------------------------

def _rows(start: int, count: int) -> list[dict]:
    words = ["dog", "cat", "beach", "snow", "bike", "red", "child", "water"]
    return [{"id": i, "seq": i, "status": "ok", "path": f"/p/IMG_{i}.jpg",
             "caption": f"a {words[i % 8]} and a {words[(i * 3) % 8]} near {words[(i // 8) % 8]}",
             "tags": [{"label": "tabby", "prob": 0.5}]} for i in range(start, start + count)]


def test_final_flush_merges_and_keeps_results(tmp_path):
    many = KeywordIndex(tmp_path / "many.sqlite")
    for start in range(1, 400, 40):  # ten commits, as a long ingest makes them
        many.update(_rows(start, 40))
        many.flush()
    one = KeywordIndex(tmp_path / "one.sqlite")
    one.update(_rows(1, 400))
    one.flush()
    queries = ("dog beach", "red", "child water snow")
    before = [many.search(q, limit=400) for q in queries]
    assert many._written == 400
    many.flush(final=True)  # this run wrote every document: merged into one b-tree
    assert many._written == 0
    assert (tmp_path / "many.sqlite-wal").stat().st_size == 0  # folded into the file
    for q, hits in zip(queries, before):
        after, alone = many.search(q, limit=400), one.search(q, limit=400)
        assert [row_id for row_id, _ in after] == [row_id for row_id, _ in hits] == \
            [row_id for row_id, _ in alone]
        assert [s for _, s in after] == pytest.approx([s for _, s in hits])
        assert [s for _, s in after] == pytest.approx([s for _, s in alone])
    # a later small run leaves merging to FTS5's automatic merges
    many.update(_rows(401, 5))
    many.flush(final=True)
    assert many._written == 5 and many.doc_count() == 405


def test_bulk_updates_are_committed_as_they_stream(tmp_path, monkeypatch):
    index = KeywordIndex(tmp_path / "ix.sqlite", flush_every=50)
    commits = []
    flush = index.flush
    monkeypatch.setattr(index, "flush", lambda final=False: (commits.append(len(index._pending)),
                                                             flush(final)))
    index.update(iter(_rows(1, 120)))
    assert commits[:2] == [50, 50]  # never more than flush_every rows held
    index.flush()
    assert index.doc_count() == 120


_REUSE_PROBE = """
import resource, sys
import torch
from capindex.model.allocator import keep_freed_memory
from capindex.model.encoder import Encoder
if sys.argv[1] == "keep":
    assert keep_freed_memory()
encoder = Encoder()
images = torch.rand(8, 3, 224, 224).contiguous(memory_format=torch.channels_last)
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with torch.inference_mode():
        encoder(images)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults(), faults()
print(faults())  # pages the kernel had to map for one more batch
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
@pytest.mark.parametrize("mode", ["keep", "default"])
def test_the_next_batch_reuses_freed_activation_memory(mode):
    # By default glibc maps a fresh block for every activation of 32 MB or more
    # (about 20,000 pages a batch here); with the thresholds raised, none.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    out = subprocess.run([sys.executable, "-c", _REUSE_PROBE, mode], capture_output=True,
                         text=True, check=True, env=env)
    faults = int(out.stdout.split()[-1])
    assert faults < 1000 if mode == "keep" else faults > 5000


@pytest.mark.parametrize("preset, expected", [(None, "10000"), ("500", "500")])
def test_openmp_spin_is_shortened_unless_the_user_chose(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    if preset:
        env["GOMP_SPINCOUNT"] = preset
    out = subprocess.run([sys.executable, "-c", "import os, capindex; print(os.environ['GOMP_SPINCOUNT'])"],
                         capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == expected
