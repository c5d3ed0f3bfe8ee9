"""The object detector on a GPU it cannot use: with the backend "auto" (ingest's) it detects
on the CPU (onnxruntime) instead and says so in one line, and the ingest goes on; the
backend "torch", asked for, fails with one clear line.

There is no GPU here: the torch port's loader is made to fail as on such a GPU, and the
pixels are said to be on "cuda:0" where the detector is chosen (`DeferredDetector.on`)."""

from __future__ import annotations

import pytest
import torch
from helpers import check_library

import capindex
import capindex.model.yolox_torch as yolox_torch
from capindex.errors import ModelError
from capindex.model.detector import Detector
from capindex.pipeline.detect import DeferredDetector, load_detector
from capindex.pipeline.report import Events

NO_KERNEL = "CUDA error: no kernel image is available for execution on the device"


class PortWithoutKernels(torch.nn.Module):
    """The torch port as on a GPU it was not built for: it loads, but cannot run."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def to(self, *args, **kwargs):  # stays on the CPU: there is no CUDA here
        return self

    def forward(self, pixels):
        raise RuntimeError(NO_KERNEL)


def missing_weights(*args, **kwargs):
    raise ModelError("yolox_nano.safetensors: cannot read the torch detector's weights")


@pytest.fixture
def pixels_on_gpu(monkeypatch):
    """The pixels of every batch are taken to be on cuda:0 when the detector is chosen."""
    chosen = DeferredDetector.on
    monkeypatch.setattr(DeferredDetector, "on", lambda self, device: chosen(self, "cuda:0"))


class Notes(Events):
    def __init__(self):
        self.notes = []

    def notice(self, text):
        self.notes.append(text)


@pytest.mark.parametrize("port, reason", [
    (missing_weights, "yolox_nano.safetensors: cannot read the torch detector's weights"),
    (lambda *args, **kwargs: PortWithoutKernels(),
     f"the torch detector cannot run on cuda:0 ({NO_KERNEL})")])
def test_auto_detects_on_the_cpu_when_the_torch_port_cannot_run_on_the_gpu(monkeypatch, port,
                                                                          reason):
    monkeypatch.setattr(yolox_torch, "load_yolox", port)
    deferred = load_detector()
    model = deferred.on("cuda:0")
    assert (model.backend, model.device.type) == ("onnxruntime", "cpu")
    assert deferred.on("cuda:0") is model is deferred.detector  # tried once, not every batch
    assert deferred.take_notes() == [
        f"the object detector runs on the CPU (onnxruntime), not on cuda:0: {reason}"]
    assert deferred.take_notes() == []


@pytest.mark.parametrize("port, reason", [
    (missing_weights, "cannot read the torch detector's weights"),
    (lambda *args, **kwargs: PortWithoutKernels(), f"cannot run on cuda:0 .{NO_KERNEL}")])
def test_the_torch_backend_asked_for_fails_with_one_line(monkeypatch, port, reason):
    monkeypatch.setattr(yolox_torch, "load_yolox", port)
    with pytest.raises(ModelError, match=reason) as info:
        load_detector(backend="torch").on("cuda:0")
    assert "\n" not in str(info.value)
    with pytest.raises(ModelError, match=reason):
        Detector.load(backend="torch", device="cuda:0")


def test_an_ingest_goes_on_with_the_cpu_detector(tmp_path, samples, fake, monkeypatch,
                                                 pixels_on_gpu):
    monkeypatch.setattr(yolox_torch, "load_yolox", missing_weights)
    events = Notes()
    lib = capindex.Library(tmp_path / "lib")
    summary = lib.ingest([samples], captioner=fake, detector=load_detector(), events=events,
                         workers=0, batch_size=2)
    assert (summary.new, summary.failed) == (5, 0)
    assert events.notes == [  # once, though each of the 3 batches had objects to find
        "the object detector runs on the CPU (onnxruntime), not on cuda:0: "
        "yolox_nano.safetensors: cannot read the torch detector's weights"]
    rows = check_library(lib.root)
    assert all(r["objects"] is not None and r["detector_id"].startswith("yolox-nano@")
               for r in rows.values())
    assert [o["label"] for o in rows[str(samples / "chelsea.jpg")]["objects"]][:1] == ["cat"]


def test_an_ingest_asked_for_the_torch_backend_stops_with_its_error(tmp_path, samples, fake,
                                                                    monkeypatch, pixels_on_gpu):
    monkeypatch.setattr(yolox_torch, "load_yolox", missing_weights)
    lib = capindex.Library(tmp_path / "lib")
    with pytest.raises(ModelError, match="cannot read the torch detector's weights"):
        lib.ingest([samples], captioner=fake, detector=load_detector(backend="torch"),
                   workers=0)
