"""Training end to end on a handful of generated images, datasets, scoring."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageDraw

from capindex.cli import main
from capindex.errors import DatasetError
from capindex.model.captioner import Captioner
from capindex.model.checkpoint import load_checkpoint
from capindex.model.preprocess import image_tensor
from capindex.training.datasets import read_dataset
from capindex.training.scoring import score_captions
from capindex.training.trainer import TrainConfig, train

TINY = {"hidden_dim": 64, "embed_dim": 32, "attention_dim": 32, "project_dim": 64, "dropout": 0.0}
SCENES = {
    "red.jpg": ("red", "a red square on a white wall"),
    "blue.jpg": ("blue", "blue stripes in the sky"),
    "green.jpg": ("green", "a green circle in the middle"),
    "yellow.jpg": ("yellow", "yellow sand near the sea"),
}


def _make_dataset(root, split_files=True):
    (root / "images").mkdir(parents=True)
    rows = ["image,caption"]
    for i, (name, (colour, caption)) in enumerate(SCENES.items()):
        img = Image.new("RGB", (160, 120), "white")
        draw = ImageDraw.Draw(img)
        if i == 1:
            for x in range(0, 160, 20):
                draw.rectangle((x, 0, x + 9, 120), fill=colour)
        elif i == 2:
            draw.ellipse((40, 20, 120, 100), fill=colour)
        else:
            draw.rectangle((30 * i, 20, 30 * i + 60, 80), fill=colour)
        img.save(root / "images" / name)
        rows.append(f"{name},{caption}")
    (root / "captions.csv").write_text("\n".join(rows) + "\n")
    if split_files:
        names = "\n".join(SCENES) + "\n"
        (root / "train.txt").write_text(names)
        (root / "val.txt").write_text(names)
    return root


def test_tiny_training_run_learns_and_memorises(tmp_path):
    data = read_dataset(_make_dataset(tmp_path / "tiny"))
    config = TrainConfig(cell="gru", epochs=40, batch_size=2, lr=1e-2, lr_decay=1.0, patience=40,
                         min_count=1, attention_reg=0.0, model=TINY)
    out = tmp_path / "model.pt"
    result = train([data], out, config, tmp_path / "cache", tmp_path / "work", log=lambda m: None)
    losses = [h["train_loss"] for h in result["history"]]
    assert losses[-1] < losses[0] / 10
    captioner = Captioner.load(out, device="cpu", beam_size=3)
    images = torch.stack([image_tensor(data.image_dir / n) for n in SCENES])
    got = [c.text for c in captioner.caption_batch(images)]
    assert got == [caption for _, caption in SCENES.values()]
    assert result["best_cider"] > 5.0


def test_interrupted_training_resumes_to_the_same_result(tmp_path):
    data = read_dataset(_make_dataset(tmp_path / "tiny"))
    kwargs = dict(cell="lstm", batch_size=2, lr=3e-3, patience=50, min_count=1, model=TINY)
    cache, log = tmp_path / "cache", lambda m: None
    straight = train([data], tmp_path / "a.pt", TrainConfig(epochs=5, **kwargs), cache,
                     tmp_path / "wa", log=log)
    train([data], tmp_path / "b.pt", TrainConfig(epochs=2, **kwargs), cache, tmp_path / "wb",
          log=log)  # stopped after two epochs
    resumed = train([data], tmp_path / "b.pt", TrainConfig(epochs=5, **kwargs), cache,
                    tmp_path / "wb", resume=True, log=log)
    assert resumed["epochs"] == 5
    assert [h["train_loss"] for h in resumed["history"]] == pytest.approx(
        [h["train_loss"] for h in straight["history"]], rel=1e-4)
    with pytest.raises(ValueError, match="saved for another recipe"):
        train([data], tmp_path / "b.pt", TrainConfig(epochs=6, **{**kwargs, "lr": 1e-3}), cache,
              tmp_path / "wb", resume=True, log=log)


def test_dataset_without_split_files_holds_out_a_seeded_sample(tmp_path):
    root = _make_dataset(tmp_path / "nosplit", split_files=False)
    a, b = read_dataset(root, holdout=1, seed=0), read_dataset(root, holdout=1, seed=0)
    assert a.val == b.val and len(a.val) == 1 and len(a.train) == 3
    assert set(a.val).isdisjoint(a.train)


def test_dataset_errors_name_the_problem(tmp_path):
    with pytest.raises(DatasetError, match=r"no captions\.csv"):
        read_dataset(tmp_path)
    (tmp_path / "captions.csv").write_text("file,text\nx.jpg,hello\n")
    with pytest.raises(DatasetError, match="needs the columns image,caption"):
        read_dataset(tmp_path)


def test_scores_come_from_coco_caption():
    refs = {"1": ["a dog runs on the grass", "a brown dog is running"], "2": ["a man rides a bike"]}
    perfect = score_captions({"1": "a dog runs on the grass", "2": "a man rides a bike"}, refs)
    assert perfect["BLEU-1"] == pytest.approx(1.0, abs=1e-6)
    assert perfect["BLEU-4"] > 0.99 and perfect["ROUGE-L"] == pytest.approx(1.0)
    poor = score_captions({"1": "a cat sleeps", "2": "two women talk"}, refs)
    assert poor["BLEU-4"] < 0.01 and poor["CIDEr-D"] < perfect["CIDEr-D"]


def test_train_and_evaluate_commands(tmp_path):
    root = _make_dataset(tmp_path / "tiny")
    out = tmp_path / "m.pt"
    runner = CliRunner()
    result = runner.invoke(main, ["train", "--data", str(root), "--out", str(out), "--epochs", "2",
                                  "--batch-size", "2", "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert "checkpoint:" in result.output and out.is_file()
    result = runner.invoke(main, ["evaluate", "--data", str(root), "--model", str(out),
                                  "--cache-dir", str(tmp_path / "c"), "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report["scores"]) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"}
    assert report["images"] == 4


def test_cached_features_are_keyed_by_the_preprocessing(tmp_path, monkeypatch):
    from capindex.training import features

    class CountingEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def forward(self, images):
            return images.mean() + torch.zeros(len(images), 49, 1280), None

    built = []

    def factory():
        built.append(1)
        return CountingEncoder()

    images = _make_dataset(tmp_path / "data") / "images"
    names = sorted(SCENES)
    first = features.cached_features(images, names, tmp_path / "cache", factory, workers=0)
    again = features.cached_features(images, names, tmp_path / "cache", factory, workers=0)
    assert len(built) == 1 and torch.equal(first[names[0]], again[names[0]])  # read back
    monkeypatch.setattr(features, "PREPROCESS_ID", "another-resize")
    features.cached_features(images, names, tmp_path / "cache", factory, workers=0)
    assert len(built) == 2  # features made by other preprocessing are not reused


def test_train_scst_command_fine_tunes_a_trained_checkpoint(tmp_path):
    root = _make_dataset(tmp_path / "tiny")
    runner = CliRunner()
    base, tuned = tmp_path / "m.pt", tmp_path / "scst.pt"
    cache = ["--cache-dir", str(tmp_path / "c")]
    result = runner.invoke(main, ["train", "--data", str(root), "--out", str(base), "--epochs", "2",
                                  "--batch-size", "2", *cache])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["train-scst", "--init", str(base), "--data", str(root), "--out",
                                  str(tuned), "--max-steps", "3", "--images-per-batch", "2",
                                  "--val-every", "1", "--lr", "1e-3", *cache])
    assert result.exit_code == 0, result.output
    if "checkpoint:" in result.output:  # some step beat the start: its provenance says so
        meta = load_checkpoint(tuned)[2]
        assert meta["scst"]["step"] in (1, 2, 3) and meta["model_id"].endswith("-scst")
        assert meta["val_greedy"]["tiny"]["CIDEr-D"] > meta["scst"]["history"][0]["val"]["tiny"]["CIDEr-D"]
    else:
        assert "nothing written" in result.output and not tuned.exists()
