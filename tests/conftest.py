"""Shared fixtures: a private library per test, the fake captioner, generated bad inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import FakeCaptioner, bad_input_folder, solid

from capindex.cli import main

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_images"


@pytest.fixture(autouse=True)
def capindex_home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own library: nothing touches the user's data."""
    home = tmp_path / "library"
    monkeypatch.setenv("CAPINDEX_HOME", str(home))
    return home


@pytest.fixture
def fake() -> FakeCaptioner:
    return FakeCaptioner()


@pytest.fixture
def cli(fake):
    """cli("ingest", path, ...) -> click Result, with `fake` as the captioner."""

    def invoke(*args, captioner=None):
        chosen = captioner or fake
        return CliRunner().invoke(main, [str(a) for a in args],
                                  obj={"load_captioner": lambda model_path, device: chosen})

    return invoke


@pytest.fixture(scope="session")
def bad_inputs(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A folder holding every awkward input (built once; tests must not change it)."""
    root = tmp_path_factory.mktemp("bad") / "inputs"
    return root, bad_input_folder(root)


@pytest.fixture
def photos(tmp_path) -> Path:
    """Four small distinct photos: red.jpg, green.png, blue.jpg, sub/gray.jpg."""
    root = tmp_path / "photos"
    solid(root / "red.jpg", (220, 20, 20))
    solid(root / "green.png", (20, 220, 20))
    solid(root / "blue.jpg", (20, 20, 220))
    solid(root / "sub" / "gray.jpg", (128, 128, 128))
    return root


@pytest.fixture
def samples(tmp_path) -> Path:
    """A private copy of sample_images/."""
    return Path(shutil.copytree(SAMPLES, tmp_path / "samples"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random decoder of the real interface but tiny sizes: decoding costs nothing."""
    from capindex.model.checkpoint import save_checkpoint
    from capindex.model.config import ModelConfig
    from capindex.model.decoder import CaptionDecoder
    from capindex.model.vocab import SPECIALS, Vocabulary

    vocab = Vocabulary([*SPECIALS, "a", "dog", "runs"])
    config = ModelConfig(vocab_size=len(vocab), hidden_dim=16, embed_dim=8, attention_dim=8,
                         project_dim=16)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, CaptionDecoder(config).eval(), vocab, {"model_id": "tiny"})
    return path
