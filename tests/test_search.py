"""`capindex search`: stemmed BM25 over caption, tags and file name."""

from __future__ import annotations

import json
import re

import pytest
from fakes import solid


@pytest.fixture
def ingested(cli, photos):
    solid(photos / "IMG_2041_beach-sunset.jpg", (230, 230, 20))
    assert cli("ingest", photos, "--workers", "0").exit_code == 0
    return photos


def paths(result) -> list[str]:
    assert result.exit_code == 0, result.output
    return [hit["path"] for hit in json.loads(result.stdout)]


def test_plain_output_shows_rank_score_path_caption(cli, ingested):
    result = cli("search", "red")
    assert result.exit_code == 0
    first = result.stdout.splitlines()[0]
    assert re.fullmatch(rf"  1 +\d+\.\d\d  {ingested}/red\.jpg  a dark red picture", first)


def test_json_output(cli, ingested):
    result = cli("search", "blue", "--json", "--limit", "1")
    hits = json.loads(result.stdout)
    assert len(hits) == 1
    assert set(hits[0]) == {"rank", "score", "id", "path", "caption", "generated_caption",
                            "user_caption", "tags"}
    assert hits[0]["rank"] == 1 and hits[0]["path"] == f"{ingested}/blue.jpg"
    assert hits[0]["tags"][0]["label"] == "blue thing"


def test_stemming_tags_and_file_names(cli, ingested):
    assert len(paths(cli("search", "pictures", "--json"))) == 5  # picture(s): stemmed
    assert len(paths(cli("search", "things", "--json"))) == 5  # tags: "red thing", ...
    assert paths(cli("search", "tags:green", "--json")) == [f"{ingested}/green.png"]
    assert paths(cli("search", "beach", "--json")) == [f"{ingested}/IMG_2041_beach-sunset.jpg"]
    assert paths(cli("search", "name:sunsets", "--json")) == [f"{ingested}/IMG_2041_beach-sunset.jpg"]


def test_more_matching_words_rank_higher(cli, ingested):
    found = paths(cli("search", "dark blue thing", "--json"))
    assert found[0] == f"{ingested}/blue.jpg" and len(found) == 5


def test_boolean_and_phrase_queries(cli, ingested):
    assert sorted(paths(cli("search", "picture AND NOT dark", "--json"))) == \
        [f"{ingested}/IMG_2041_beach-sunset.jpg", f"{ingested}/sub/gray.jpg"]
    assert paths(cli("search", '"dark green"', "--json")) == [f"{ingested}/green.png"]


def test_not_and_a_leading_minus_exclude_words(cli, ingested):
    without_dark = [f"{ingested}/IMG_2041_beach-sunset.jpg", f"{ingested}/sub/gray.jpg"]
    # Words are OR-ed, but NOT excludes: not "picture, or anything that is not dark".
    assert sorted(paths(cli("search", "picture NOT dark", "--json"))) == without_dark
    assert sorted(paths(cli("search", "picture -dark", "--json"))) == without_dark
    assert sorted(paths(cli("search", "NOT dark", "--json"))) == without_dark
    assert sorted(paths(cli("search", "dark -red -tags:blue", "--json"))) == [f"{ingested}/green.png"]
    # a hyphen inside a word is no minus
    assert paths(cli("search", "beach-sunset", "--json")) == [f"{ingested}/IMG_2041_beach-sunset.jpg"]


def test_no_match_and_stopwords_only(cli, ingested):
    result = cli("search", "zebra")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "no images match 'zebra'\n")
    result = cli("search", "the of a")  # nothing indexed could match: say so (issue 16)
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr.startswith("Error: cannot parse query 'the of a': it has only common "
                                    "words (the, a, of, ...), which are not indexed;")
    assert paths(cli("search", "zebra", "--json")) == []


def test_failed_files_are_not_results(cli, photos):
    (photos / "red-broken.jpg").write_text("nope")
    cli("ingest", photos, "--workers", "0")
    assert f"{photos}/red-broken.jpg" not in paths(cli("search", "red", "--json"))
