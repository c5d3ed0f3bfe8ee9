"""The command line: help, option checks, exact error text and exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from capindex.cli import main
from capindex.cli.progress import Progress, format_summary
from capindex.errors import ModelError
from capindex.pipeline.report import Summary
from capindex.store.library_dir import LibraryDir as Library

COMMANDS = sorted(main.commands)


def test_the_four_commands_exist():
    assert {"ingest", "search", "export", "info"} <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_with_an_example(name):
    command = main.commands[name]
    assert command.help and "Example" in command.help, f"{name} needs help with an example"
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{name} {param.opts[0]} has no help"
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output


def test_main_help_lists_commands_and_the_library_option():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "--library DIR" in result.output and "CAPINDEX_HOME" in result.output
    for name in ("ingest", "search", "export", "info"):
        assert name in result.output


def test_ingest_help_documents_exit_codes():
    result = CliRunner().invoke(main, ["ingest", "--help"])
    for line in ("0    every file is captioned", "3    finished, but some files or folders could not be read",
                 "130  interrupted by Ctrl-C"):
        assert line in result.output


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys\n"
        "from capindex.cli import main\n"
        "try:\n    main(['ingest', '--help'])\nexcept SystemExit:\n    pass\n"
        "print([m for m in ('torch', 'pyarrow', 'sqlalchemy', 'whoosh') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("[]")


def test_python_dash_m_runs_the_command():
    out = subprocess.run([sys.executable, "-m", "capindex", "search", "--help"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.startswith("Usage: capindex search ")


def test_search_on_an_empty_library_says_how_to_ingest(cli, capindex_home):
    result = cli("search", "dog")
    assert result.exit_code == 1
    assert result.stderr == (f"Error: the library at {capindex_home} is empty; add photos first "
                             "with: capindex ingest PATH\n")


def test_bad_query_syntax_is_a_clear_error(cli):
    result = cli("search", "dog AND (")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: cannot parse query 'dog AND (': the parentheses do not match. Use plain words, "
        "\"quoted phrases\", AND / OR / NOT, or field:word with the fields caption, alt, "
        "objects, tags, words and name\n")


@pytest.mark.parametrize("query, problem", [
    ('"dog', 'a quote (") is not closed'),
    ("dog OR", "OR needs a word on each side"),
    ("NOT", "NOT needs a word after it"),
    ("colour:red", "there is no field 'colour'"),
    ("tags:", "tags: needs a word right after the colon"),
    ("caption:[a TO", "a range's brackets do not match"),
    ("   ", "the query is empty"),
])
def test_query_problems_are_named(cli, query, problem):
    result = cli("search", query)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: cannot parse query {query!r}: {problem}. ")


def test_ingest_path_must_exist(cli, tmp_path):
    result = cli("ingest", tmp_path / "nope")
    assert result.exit_code == 2
    assert f"Error: Invalid value for 'PATH...': Path '{tmp_path / 'nope'}' does not exist." \
        in result.stderr


def test_ingest_options_are_validated_before_work(cli, photos, fake):
    result = cli("ingest", photos, "--batch-size", "0")
    assert result.exit_code == 2
    assert "Error: Invalid value for '--batch-size': 0 is not in the range 1<=x<=4096." \
        in result.stderr
    result = cli("ingest", photos, "--device", "gpu")
    assert result.exit_code == 2
    assert "Error: Invalid value for '--device': 'gpu' is not one of 'auto', 'cpu', 'cuda'." \
        in result.stderr
    assert fake.batches == []


def test_cuda_requested_without_cuda(cli, photos):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = cli("ingest", photos, "--device", "cuda")
    assert result.exit_code == 2
    assert result.stderr.endswith("Error: Invalid value for '--device': CUDA is not available on "
                                  "this machine; use --device cpu or auto\n")


def test_model_that_cannot_load_is_one_line(photos):
    def broken(model_path, device):
        raise ModelError("missing.pt: no such model checkpoint")

    result = CliRunner().invoke(main, ["ingest", str(photos)], obj={"load_captioner": broken})
    assert result.exit_code == 1
    assert result.stderr == "Error: missing.pt: no such model checkpoint\n"


def test_a_checkpoint_that_is_no_checkpoint_fails_before_the_run(photos, tmp_path,
                                                                   capindex_home):
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    result = CliRunner().invoke(main, ["ingest", str(photos), "--model", str(junk)])
    assert result.exit_code == 1
    assert result.stderr == f"Error: {junk}: not a readable checkpoint (not a zip archive)\n"
    assert not (capindex_home / "catalog.sqlite").exists()


def test_ingest_ok_exits_0_and_prints_a_summary(cli, photos):
    result = cli("ingest", photos, "--workers", "0")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("4 new, 0 unchanged, 0 moved, 0 failed; 4 captioned in ")
    assert "images/s" in result.stderr


def test_quiet_prints_nothing(cli, photos):
    result = cli("ingest", photos, "--workers", "0", "--quiet")
    assert result.exit_code == 0
    assert result.output == ""


def test_library_option_beats_the_environment(cli, photos, tmp_path, capindex_home):
    other = tmp_path / "elsewhere"
    assert cli("--library", other, "ingest", photos, "--workers", "0").exit_code == 0
    assert (other / "catalog.sqlite").is_file()
    assert not capindex_home.exists()
    result = cli("--library", other, "search", "red")
    assert result.exit_code == 0 and "red.jpg" in result.stdout


def test_library_location_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("CAPINDEX_HOME", str(tmp_path / "from-env"))
    assert Library().root == tmp_path / "from-env"
    monkeypatch.delenv("CAPINDEX_HOME")
    from platformdirs import user_data_dir

    assert Library().root == Path(user_data_dir("capindex", appauthor=False)).absolute()
    assert Library(tmp_path / "given").root == tmp_path / "given"


def test_info_on_an_empty_library(cli, capindex_home):
    result = cli("info")
    assert result.exit_code == 0
    assert result.stdout == (f"library: {capindex_home}\n"
                             "no images yet; add some with: capindex ingest PATH\n")
    assert not capindex_home.exists()  # looking does not create


def test_export_needs_a_known_format(cli, photos, tmp_path):
    cli("ingest", photos, "--workers", "0")
    result = cli("export", tmp_path / "out.txt")
    assert result.exit_code == 2
    assert result.stderr.endswith("Error: Invalid value for '--format': cannot tell the format from "
                                  "the file name; add --format parquet, csv or jsonl\n")
    result = cli("export", "-", "--format", "parquet")
    assert result.exit_code == 2
    assert "Parquet cannot go to standard output; give a file name" in result.stderr


def test_export_of_an_empty_library(cli, capindex_home, tmp_path):
    result = cli("export", tmp_path / "out.parquet")
    assert result.exit_code == 1
    assert result.stderr == (f"Error: the library at {capindex_home} is empty; add photos first "
                             "with: capindex ingest PATH\n")


def test_a_second_ingest_is_refused_while_one_runs(cli, photos, capindex_home):
    capindex_home.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         f"fd = os.open({str(capindex_home / 'ingest.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.lockf(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = cli("ingest", photos, "--workers", "0")
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 1
    assert result.stderr == (f"Error: another capindex ingest is already writing to "
                             f"{capindex_home}; wait for it to finish (search works meanwhile)\n")


def test_progress_bar_shows_images_per_second(capsys):
    progress = Progress(force=True)
    progress.start(4)
    progress.skipped("/photos/x.jpg", "not a readable image")
    progress.advance(4)
    progress.finish()
    err = capsys.readouterr().err
    assert "skipping /photos/x.jpg: not a readable image\n" in err
    assert "4/4" in err and "images/s" in err


def test_summary_text():
    summary = Summary(new=3, unchanged=5, moved=1, deleted=2, failed=1, previously_failed=2,
                      other_model=4, captioned=3, seconds=1.5)
    assert format_summary(summary) == (
        "3 new, 5 unchanged, 1 moved, 2 deleted, 1 failed; 3 captioned in 1.5 s (2.0 images/s)\n"
        "2 files failed in an earlier run and were not read again (use --retry-failed)\n"
        "4 images have captions from another model (use --recaption to redo them)")
