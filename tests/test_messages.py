"""What the terminal shows: control characters in names escaped, no Pillow warnings without
a file name, no traceback on a repeated Ctrl-C, and a query may start with "-"."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from fakes import solid
from helpers import check_library
from PIL import Image

import capindex.pipeline.decode as decode

REPO = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).with_name("run_fake_ingest.py")
INTERRUPTED = "interrupted: what was written is kept; run the same command again to finish"


def fake_ingest(args, library: Path, **popen):
    """`capindex ARGS` with the fake captioner and this checkout's code, in a subprocess."""
    return subprocess.Popen([sys.executable, str(RUNNER), *map(str, args)],
                            env={**os.environ, "CAPINDEX_HOME": str(library),
                                 "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


# -- control characters in names ---------------------------------------------------------

def test_printable_escapes_control_characters_only():
    from capindex.cli.common import printable

    assert printable("caf\xe9 \u65e5\u672c / x_1.jpg") == "caf\xe9 \u65e5\u672c / x_1.jpg"
    assert printable("a\nb\x1b[2Jc\td\x7f\x85\u202e\udce9") == \
        "a\\nb\\x1b[2Jc\\td\\x7f\\x85\\u202e\\udce9"


@pytest.fixture
def hostile(tmp_path) -> Path:
    """A folder with an image whose name holds an OSC escape and a text file whose name
    holds a newline and a clear-screen sequence."""
    root = tmp_path / "photos"
    solid(root / "red\x1b]0;pwned\x07.jpg", (220, 20, 20))
    (root / "bad\nname\x1b[2J.jpg").write_text("not a picture")
    return root


def test_names_are_escaped_in_text_output(cli, hostile):
    result = cli("ingest", hostile, "--workers", "0")
    assert result.exit_code == 3
    assert [line for line in result.stderr.splitlines() if line.startswith("skipping")] == \
        [f"skipping {hostile}/bad\\nname\\x1b[2J.jpg: not a readable image"]

    result = cli("search", "red")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0].endswith(
        f"  {hostile}/red\\x1b]0;pwned\\x07.jpg  a dark red picture")
    result = cli("info")
    assert f"  {hostile}/bad\\nname\\x1b[2J.jpg: not a readable image\n" in result.stdout
    for command in (("search", "red"), ("info",)):
        assert "\x1b" not in cli(*command).output

    (hit,) = json.loads(cli("search", "red", "--json").stdout)  # JSON keeps the real name
    assert hit["path"] == f"{hostile}/red\x1b]0;pwned\x07.jpg"


def test_caption_escapes_names(tmp_path, tiny_checkpoint):
    from click.testing import CliRunner

    from capindex.cli import main

    bad = tmp_path / "x\x1b[31m.jpg"
    bad.write_text("text")
    result = CliRunner().invoke(main, ["caption", str(bad), "--model", str(tiny_checkpoint)])
    assert result.exit_code == 1
    assert result.stderr == f"skipping {tmp_path}/x\\x1b[31m.jpg: not a readable image\n"


# -- Pillow's warnings about damaged EXIF -------------------------------------------------

def corrupt_exif_jpeg(path: Path) -> Path:
    """A JPEG whose EXIF directory claims 200 entries and holds 1: Pillow warns
    "Corrupt EXIF data" when it reads it."""
    exif = Image.Exif()
    exif[0x010F] = "FakeCam"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (220, 20, 20)).save(buffer, "JPEG", exif=exif)
    data = bytearray(buffer.getvalue())
    tiff = data.find(b"Exif\x00\x00") + 6
    data[tiff + 8:tiff + 10] = struct.pack(">H", 200)  # big-endian TIFF header (MM)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def test_damaged_exif_costs_the_metadata_without_a_warning(tmp_path):
    data = corrupt_exif_jpeg(tmp_path / "x.jpg").read_bytes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        meta, pixels = decode.decode_image(data)
    assert [str(w.message) for w in caught] == []
    assert (meta["width"], meta["height"], tuple(pixels.shape)) == (64, 48, (3, 224, 224))


def test_no_warning_reaches_stderr_from_a_decode_worker(tmp_path, capindex_home):
    corrupt_exif_jpeg(tmp_path / "photos" / "x.jpg")
    proc = fake_ingest(["0", "1024", "ingest", tmp_path / "photos", "--workers", "1"],
                       capindex_home)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert stderr.startswith("1 new, 0 unchanged, 0 moved, 0 failed; ")
    assert stderr.count("\n") == 1


# -- Ctrl-C, twice or more ----------------------------------------------------------------

def test_a_second_ctrl_c_exits_at_once_wherever_it_lands(tmp_path):
    """Here the second Ctrl-C lands in a __del__, as it can in the DataLoader's: Python
    would print it as an ignored exception and go on."""
    script = (
        "import os, signal, time\n"
        "from capindex.cli.library_commands import _stop_on_sigint\n"
        "class Slow:\n"
        "    def __del__(self):\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        time.sleep(5)\n"
        "with _stop_on_sigint() as stop:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(0.2)\n"
        "    assert stop.is_set()\n"
        "    Slow()\n"
        "print('went on')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert (proc.returncode, proc.stdout) == (130, "")
    assert proc.stderr == ("\nstopping after the current batch (Ctrl-C again to stop now)\n"
                           f"{INTERRUPTED}\n")


def committed(library: Path) -> int:
    try:
        with sqlite3.connect(f"file:{library / 'catalog.sqlite'}?mode=ro", uri=True) as db:
            return db.execute("select count(*) from images").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_repeated_ctrl_c_during_an_ingest(cli, tmp_path, capindex_home):
    photos = tmp_path / "many"
    for i in range(40):
        solid(photos / f"img-{i:02d}.jpg", ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256))
    proc = fake_ingest(["0.2", "4", "ingest", photos, "--batch-size", "4", "--workers", "2"],
                       capindex_home, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while committed(capindex_home) < 4:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        for _ in range(4):  # an impatient user
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.1)
        _, stderr = proc.communicate(timeout=60)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    assert stderr.rstrip().endswith(INTERRUPTED) and stderr.count(INTERRUPTED) == 1
    result = cli("ingest", photos, "--workers", "0")  # the next run finishes the job
    assert result.exit_code == 0, result.output
    assert len(check_library(capindex_home)) == 40


# -- a query that starts with "-" -----------------------------------------------------------

def hits(result) -> list[str]:
    assert result.exit_code == 0, result.output
    return [hit["path"] for hit in json.loads(result.stdout)]


def test_a_query_may_start_with_a_minus(cli, photos):
    assert cli("ingest", photos, "--workers", "0").exit_code == 0
    without_dark = hits(cli("search", "NOT dark", "--json"))
    assert without_dark and len(without_dark) < 4
    assert hits(cli("search", "-dark", "--json")) == without_dark
    assert hits(cli("search", "--json", "-dark")) == without_dark
    assert hits(cli("search", "-n", "1", "-dark", "--json")) == without_dark[:1]
    assert hits(cli("search", "picture", "-dark", "--json")) == \
        hits(cli("search", "picture -dark", "--json"))  # words in several arguments
    # a word that starts like the -n option is a word, not "-n ature"
    assert len(hits(cli("search", "-nature", "--json"))) == 4
    result = cli("search", "-dark")
    assert result.exit_code == 0 and result.stdout.count("\n") == len(without_dark)
    # an unknown long option is still a mistake, and help still works
    result = cli("search", "--cat")
    assert result.exit_code == 2 and "Error: No such option '--cat'." in result.stderr
    assert cli("search", "-h").stdout.startswith("Usage: ")
    assert hits(cli("search", "--json", "--", "-dark")) == without_dark
