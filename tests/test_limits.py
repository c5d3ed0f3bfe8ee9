"""Special and oversized files: only regular files are opened, images over the size limit
are refused before they are read, checkpoints are checked before they are loaded, and
`capindex caption` decodes by the ingest's rules. Hangs are tested in subprocesses with
timeouts."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from fakes import huge_png, solid
from helpers import check_library

import capindex.pipeline.decode as decode
from capindex.cli import main
from capindex.errors import ModelError
from capindex.model.checkpoint import load_checkpoint, save_checkpoint
from capindex.model.config import ModelConfig
from capindex.model.decoder import CaptionDecoder
from capindex.model.vocab import SPECIALS, Vocabulary
from capindex.pipeline.caption import load_captioner

REPO = Path(__file__).resolve().parent.parent
GB3 = 3 * 10**9


def capindex_process(args, library: Path, timeout: float = 120, memory: int | None = None):
    """`python -m capindex ARGS` from this checkout; `memory`: an address-space limit in bytes."""
    def limit():
        if memory:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run([sys.executable, "-m", "capindex", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=limit,
                          env={**os.environ, "CAPINDEX_HOME": str(library),
                               "PYTHONPATH": str(REPO)})


def sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def test_caption_of_a_fifo_is_one_line_not_a_hang(tmp_path, tiny_checkpoint, capindex_home):
    os.mkfifo(tmp_path / "f.jpg")
    good = solid(tmp_path / "good.jpg")
    proc = capindex_process(["caption", tmp_path / "f.jpg", good, "--model", tiny_checkpoint],
                            capindex_home)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == f"skipping {tmp_path}/f.jpg: not a regular file\n"
    assert proc.stdout.startswith(f"{good}\t")


@pytest.mark.parametrize("kind", ["fifo", "device", "3 GB"])
def test_a_model_that_is_no_regular_file_or_too_big_is_one_line(tmp_path, photos, kind,
                                                                  capindex_home):
    model = {"fifo": tmp_path / "model.pt", "device": Path("/dev/zero"),
             "3 GB": tmp_path / "model.pt"}[kind]
    if kind == "fifo":
        os.mkfifo(model)
    elif kind == "3 GB":
        sparse(model, GB3)
    reason = ("model checkpoint too large (3,000 MB; the limit is 1,000 MB)" if kind == "3 GB"
              else "not a regular file")
    # 2 GB of address space: reading the whole file would fail, not swamp the machine.
    proc = capindex_process(["ingest", photos, "--model", model], capindex_home, timeout=60,
                            memory=2 * 10**9)
    assert (proc.returncode, proc.stderr) == (1, f"Error: {model}: {reason}\n")
    assert not (capindex_home / "catalog.sqlite").exists()


def test_caption_with_a_fifo_model_is_one_line(tmp_path, capindex_home):
    os.mkfifo(tmp_path / "model.pt")
    proc = capindex_process(["caption", solid(tmp_path / "a.jpg"), "--model",
                             tmp_path / "model.pt"], capindex_home, timeout=60)
    assert (proc.returncode, proc.stderr) == (1, f"Error: {tmp_path}/model.pt: not a regular file\n")


def test_an_image_over_the_size_limit_is_refused_unread(cli, photos, capindex_home, monkeypatch):
    big = sparse(photos / "big.jpg", GB3)
    opened = []
    real_read = decode.read_file

    def read(path, *limits):
        if path == str(big):
            opened.append(path)
            raise PermissionError(13, "Permission denied", path)  # never read 3 GB here
        return real_read(path, *limits)

    monkeypatch.setattr(decode, "read_file", read)
    result = cli("ingest", photos, "--workers", "0")
    assert result.exit_code == 3, result.output
    reason = "file too large (3,000 MB; the limit is 500 MB)"
    assert [line for line in result.stderr.splitlines() if line.startswith("skipping")] == \
        [f"skipping {big}: {reason}"]
    assert opened == []
    row = check_library(capindex_home)[str(big)]
    assert (row["status"], row["error"], row["sha256"]) == ("error", reason, None)

    result = cli("ingest", photos, "--workers", "0")  # not reported again until it changes
    assert result.exit_code == 0 and "skipping" not in result.stderr


def test_the_size_limit_is_an_option(cli, photos, capindex_home):
    noise = torch.randint(0, 256, (700, 800, 3), dtype=torch.uint8).numpy()
    from PIL import Image

    Image.fromarray(noise).save(photos / "noise.png")  # about 1.7 MB
    size = (photos / "noise.png").stat().st_size
    assert 10**6 < size < 2 * 10**6
    result = cli("ingest", photos, "--workers", "0", "--max-file-size", "1")
    assert result.exit_code == 3
    assert f"skipping {photos}/noise.png: file too large ({size / 1e6:.1f} MB; the limit is " \
           "1 MB)" in result.stderr
    result = cli("ingest", photos, "--workers", "0", "--max-file-size", "2")  # read now
    assert result.exit_code == 0, result.output
    assert "1 retried" in result.stderr
    assert check_library(capindex_home)[f"{photos}/noise.png"]["status"] == "ok"


def _finishes(call, seconds: float = 20.0, unblock=None):
    """call() in a thread, its result or exception; if it is still running after
    `seconds`, unblock() and fail."""
    outcome = []

    def run():
        try:
            outcome.append((call(), None))
        except Exception as exc:
            outcome.append((None, exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive() and unblock:
        unblock()
        thread.join(5)
    assert outcome and not thread.is_alive(), f"still running after {seconds} s"
    result, exc = outcome[0]
    if exc is not None:
        raise exc
    return result


def test_the_decode_stage_opens_only_regular_files(tmp_path):
    """A file replaced by a FIFO (or grown) between planning and reading."""
    fifo = tmp_path / "f.jpg"
    os.mkfifo(fifo)

    def unblock():  # a writer that connects and leaves: a blocked open() returns
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    item, pixels = _finishes(lambda: decode.DecodeDataset([str(fifo)])[0], unblock=unblock)
    assert (item.error, pixels) == ("not a regular file", None)

    grown = solid(tmp_path / "grown.jpg")
    item, _ = decode.DecodeDataset([str(grown)], max_file_size=100)[0]
    assert item.error == f"file too large ({grown.stat().st_size:,} bytes; the limit is 100 bytes)"
    assert item.sha256 is None


def test_caption_decodes_by_the_ingest_rules(tmp_path, tiny_checkpoint):
    huge_png(tmp_path / "big.png", 12000, 12000)  # 144 MP: ingest refuses it
    (tmp_path / "empty.jpg").write_bytes(b"")
    good = solid(tmp_path / "good.jpg")
    result = CliRunner().invoke(main, ["caption", str(tmp_path / "big.png"),
                                       str(tmp_path / "empty.jpg"), str(good), "--model",
                                       str(tiny_checkpoint)])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"skipping {tmp_path}/big.png: image too large (144,000,000 pixels; the limit is "
        "120,000,000), possibly a decompression bomb",
        f"skipping {tmp_path}/empty.jpg: empty file"]
    assert result.stdout.startswith(f"{good}\t")


# -- checkpoints that are structurally wrong --------------------------------------------

def _payload() -> dict:
    vocab = Vocabulary([*SPECIALS, "a", "dog", "runs"])
    config = ModelConfig(vocab_size=len(vocab), hidden_dim=16, embed_dim=8, attention_dim=8,
                         project_dim=16)
    decoder = CaptionDecoder(config)
    return {"format": "capindex-caption-v1", "config": config.to_dict(), "vocab": vocab.words,
            "state_dict": {k: v.half() for k, v in decoder.state_dict().items()},
            "provenance": {"model_id": "tiny"}}


def _damage(payload: dict, case: str) -> None:
    state = payload["state_dict"]
    if case == "empty state_dict":
        payload["state_dict"] = {}
    elif case == "state_dict not a dict":
        payload["state_dict"] = [1, 2]
    elif case == "a weight of the wrong shape":
        state["embed.weight"] = torch.zeros(2, 2)
    elif case == "a weight that is no tensor":
        state["embed.weight"] = "weights"
    elif case == "an extra weight":
        state["extra.weight"] = torch.zeros(2)
    elif case == "config not a dict":
        payload["config"] = ["gru"]
    elif case == "config with text for a number":
        payload["config"]["hidden_dim"] = "many"
    elif case == "config with an unknown cell":
        payload["config"]["cell"] = "transformer"
    elif case == "huge dimensions":
        payload["config"]["hidden_dim"] = 2**40
    elif case == "another encoder's features":
        payload["config"]["feature_dim"] = 512
    elif case == "vocab not a list":
        payload["vocab"] = "a dog runs"
    elif case == "vocab without the special tokens":
        payload["vocab"] = ["a", "dog", "runs", "x", "y", "z", "w"]
    elif case == "vocab longer than the config says":
        payload["vocab"] = [*payload["vocab"], "extra"]
    elif case == "provenance not a dict":
        payload["provenance"] = ["tiny"]


DAMAGE = ["empty state_dict", "state_dict not a dict", "a weight of the wrong shape",
          "a weight that is no tensor", "an extra weight", "config not a dict",
          "config with text for a number", "config with an unknown cell", "huge dimensions",
          "another encoder's features", "vocab not a list", "vocab without the special tokens",
          "vocab longer than the config says", "provenance not a dict"]


def test_a_sound_checkpoint_passes_the_checks(tmp_path):
    payload = _payload()
    torch.save(payload, tmp_path / "ok.pt")
    decoder, vocab, meta = load_checkpoint(tmp_path / "ok.pt")
    assert meta == {"model_id": "tiny"} and len(vocab) == 7
    assert decoder.config.hidden_dim == 16


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_checkpoint_is_one_model_error(tmp_path, case):
    payload = _payload()
    _damage(payload, case)
    path = tmp_path / "bad.pt"
    torch.save(payload, path)
    with pytest.raises(ModelError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: damaged checkpoint (") and "\n" not in message


@pytest.mark.parametrize("case", ["empty state_dict", "huge dimensions", "provenance not a dict",
                                  "vocab without the special tokens"])
def test_caption_with_a_damaged_checkpoint_is_one_line(tmp_path, case):
    payload = _payload()
    _damage(payload, case)
    path = tmp_path / "bad.pt"
    torch.save(payload, path)
    result = CliRunner().invoke(main, ["caption", str(solid(tmp_path / "a.jpg")), "--model",
                                       str(path)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {path}: damaged checkpoint (")
    assert result.stderr.count("\n") == 1 and isinstance(result.exception, SystemExit)


def test_the_loader_checks_size_and_kind_before_reading(tmp_path):
    big = sparse(tmp_path / "big.pt", GB3)
    with pytest.raises(ModelError, match=r"big\.pt: model checkpoint too large \(3,000 MB; "
                                         r"the limit is 1,000 MB\)"):
        load_checkpoint(big)
    with pytest.raises(ModelError, match=r"big\.pt: model checkpoint too large"):
        load_captioner(big)
    os.mkfifo(tmp_path / "fifo.pt")
    for load in (load_checkpoint, load_captioner):
        with pytest.raises(ModelError, match=r"fifo\.pt: not a regular file"):
            _finishes(lambda load=load: load(tmp_path / "fifo.pt"),
                      unblock=lambda: os.close(os.open(tmp_path / "fifo.pt",
                                                       os.O_WRONLY | os.O_NONBLOCK)))


def test_a_saved_checkpoint_round_trips_through_the_checks(tmp_path):
    vocab = Vocabulary([*SPECIALS, "a", "cat"])
    decoder = CaptionDecoder(ModelConfig(vocab_size=len(vocab), cell="lstm", hidden_dim=8,
                                         embed_dim=8, attention_dim=8, project_dim=8))
    save_checkpoint(tmp_path / "m.pt", decoder, vocab, {"model_id": "m"})
    loaded, _, meta = load_checkpoint(tmp_path / "m.pt")
    assert meta == {"model_id": "m"} and loaded.config == decoder.config
