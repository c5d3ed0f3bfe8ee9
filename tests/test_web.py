"""`capindex serve` through Starlette's ASGI test client: the JSON API, the pages, and the
security rules (loopback or token, files by id only, escaping, CSP, CSRF/Origin, upload cap).

One small library (the fake captioner, a fake detector whose labels need escaping, EXIF
strings that need escaping, a file named like an HTML tag) is ingested once per module;
tests that change captions put them back.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser

import pytest

pytest.importorskip("starlette", reason="the web tests need the [serve] extra (starlette)")
pytest.importorskip("httpx", reason="the web tests need httpx (the [test] extra)")

from click.testing import CliRunner
from fakes import FakeCaptioner, huge_png, solid
from PIL import Image
from starlette.testclient import TestClient

import capindex
from capindex.cli import main
from capindex.pipeline.detect import DeferredDetector
from capindex.web import create_app
from capindex.web.security import access_token

XSS_NAME = "<img src=x onerror=alert(1)>.jpg"
EVIL_LABEL = "<svg onload=alert(2)>"
LOCAL = "http://127.0.0.1:8765"


class FakeBoxes:
    """The detector interface without a model: a "dog" on red photos, a label that is an
    HTML tag on the others, one box each."""

    input_size = 416

    def detect_batch(self, letterboxes, ratios, sizes):
        from capindex.model.detector import Detection

        out = []
        for pixels, (width, height) in zip(letterboxes, sizes):
            means = pixels.float().mean(dim=(1, 2))
            label = "dog" if int(means.argmax()) == 0 and means.max() - means.min() > 40 else EVIL_LABEL
            out.append([Detection(label, 0.9, (0.1 * width, 0.2 * height, 0.6 * width, 0.9 * height))])
        return out


def fake_detector() -> DeferredDetector:
    return DeferredDetector("fake-boxes@1", FakeBoxes)


def exif_jpeg(path, colour, make, model, taken, gps=None):
    image = Image.new("RGB", (96, 64), colour)
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = make, model
    exif.get_ifd(0x8769)[0x9003] = taken
    if gps:
        exif.get_ifd(0x8825).update(gps)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, exif=exif, quality=90)
    return path


def make_photos(root):
    solid(root / "red.jpg", (220, 20, 20), size=(120, 80))
    solid(root / "blue.jpg", (20, 20, 220), size=(80, 120))
    solid(root / XSS_NAME, (20, 200, 20))
    exif_jpeg(root / "sub" / "trip.jpg", (230, 30, 30), "<b>Evil</b> Corp", 'Cam"era <i>1</i>',
              "2021:07:04 12:30:45", {1: "N", 2: (48.0, 51.0, 29.0), 3: "W", 4: (2.0, 17.0, 40.0)})
    exif_jpeg(root / "sub" / "old.jpg", (30, 30, 230), "Canon", "EOS 5D", "2019:03:02 08:00:00")
    whole = (root / "red.jpg").read_bytes()
    (root / "broken.jpg").write_bytes(whole[: len(whole) // 3])
    return root


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    photos = make_photos(root / "photos")
    lib = capindex.Library(root / "lib")
    summary = lib.ingest([photos], captioner=FakeCaptioner(), detector=fake_detector(), workers=0)
    assert (summary.new, summary.failed) == (5, 1)
    return lib


@pytest.fixture(scope="module")
def app(library):
    return create_app(library, captioner=FakeCaptioner(), detector=fake_detector())


@pytest.fixture
def client(app):
    with TestClient(app, base_url=LOCAL) as client:
        yield client


def id_of(library, name: str) -> int:
    (hit,) = [h for h in library.search("", 50) if h.path.endswith("/" + name)]
    return hit.id


def csrf_of(html: str) -> str:
    return re.search(r'<meta name="csrf-token" content="([^"]+)">', html).group(1)


# -- the JSON API and the pages --------------------------------------------------

def test_search_api_returns_the_cli_objects_with_urls(client, library):
    response = client.get("/api/search", params={"q": "red"})
    assert response.status_code == 200
    body = response.json()
    expected = [hit.to_dict() for hit in library.search("red", 50)]
    assert [r["id"] for r in body["results"]] == [e["id"] for e in expected]
    first = body["results"][0]
    assert {k: first[k] for k in expected[0]} == expected[0]
    assert first["thumbnail"] == f"/thumbs/{first['id']}" and first["url"] == f"/photos/{first['id']}"
    assert body["count"] == library.count("red") >= 2
    assert body["query"] == "red" and body["next"] is None


def test_search_page_renders_the_same_results(client):
    api = client.get("/api/search", params={"q": "red"}).json()
    page = client.get("/", params={"q": "red"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for hit in api["results"]:
        assert f'href="/photos/{hit["id"]}"' in page.text
        assert f'src="/thumbs/{hit["id"]}"' in page.text
    assert f"{api['count']} photos" in page.text
    assert 'value="red"' in page.text


def test_the_first_view_lists_every_photo_and_pages_through_them(client):
    everything = client.get("/api/search").json()
    assert everything["count"] == 5 and len(everything["results"]) == 5
    first = client.get("/api/search", params={"limit": 2}).json()
    assert first["next"] == "/api/search?limit=2&offset=2"
    second = client.get(first["next"]).json()
    third = client.get(second["next"]).json()
    assert third["next"] is None
    ids = [r["id"] for page in (first, second, third) for r in page["results"]]
    assert sorted(ids) == sorted(r["id"] for r in everything["results"]) and len(set(ids)) == 5
    page = client.get("/", params={"limit": 2}).text
    assert 'href="/?limit=2&amp;offset=2" rel="next"' in page
    assert 'data-next="/api/search?limit=2&amp;offset=2"' in page
    assert 'rel="prev"' in client.get("/", params={"limit": 2, "offset": 2}).text


def names(body: dict) -> list[str]:
    return sorted(r["path"].rsplit("/", 1)[-1] for r in body["results"])


def test_filters_by_date_camera_object_and_tag(client):
    def found(**params):
        body = client.get("/api/search", params=params).json()
        assert body["count"] == len(body["results"])
        return names(body)

    assert found(camera="canon") == ["old.jpg"]
    assert found(camera="evil") == ["trip.jpg"]
    assert found(after="2020-01-01") == ["trip.jpg"]
    assert found(before="2019-03-02") == ["old.jpg"]
    assert found(after="2019-03-03", before="2021-07-03") == []
    assert found(object="dog") == ["red.jpg", "trip.jpg"]
    assert found(q="picture", object="dog", camera="evil") == ["trip.jpg"]
    assert found(tag="blue thing") == ["blue.jpg", "old.jpg"]


def test_facets_fill_the_filter_menus(client):
    facets = client.get("/api/facets").json()
    assert ["Canon EOS 5D", 1] in facets["cameras"]
    assert ["dog", 2] in facets["objects"]
    assert facets["taken"][0].startswith("2019-03-02") and facets["taken"][1].startswith("2021-07-04")
    page = client.get("/").text
    assert '<option value="Canon EOS 5D">Canon EOS 5D (1)</option>' in page
    assert '<option value="dog">dog (2)</option>' in page
    assert 'min="2019-03-02" max="2021-07-04"' in page
    chosen = client.get("/", params={"camera": "canon EOS 5d", "object": "dog"}).text
    assert '<option value="Canon EOS 5D" selected>' in chosen and '<option value="dog" selected>' in chosen
    typed = client.get("/", params={"camera": "<b>canon"}).text  # part of a name, kept in the menu
    assert '<option value="&lt;b&gt;canon" selected>&lt;b&gt;canon</option>' in typed


@pytest.mark.parametrize("params, message", [
    ({"after": "yesterday"}, "after must be a date written YYYY-MM-DD, not 'yesterday'"),
    ({"limit": "0"}, "limit must be a whole number from 1 to 200, not '0'"),
    ({"offset": "-1"}, "offset must be a whole number from 0 to 1000000, not '-1'"),
    ({"mode": "magic"}, "mode must be one of hybrid, keyword, semantic, not 'magic'"),
])
def test_bad_parameters_get_400_with_the_reason(client, params, message):
    response = client.get("/api/search", params=params)
    assert response.status_code == 400 and response.json() == {"error": message}
    page = client.get("/", params=params)
    assert page.status_code == 400 and message.replace("'", "&#39;") in page.text


def test_a_malformed_query_is_explained(client):
    response = client.get("/api/search", params={"q": "dog AND"})
    assert response.status_code == 400 and "AND" in response.json()["error"]


def test_photo_api_and_page(client, library):
    image_id = id_of(library, "trip.jpg")
    photo = client.get(f"/api/images/{image_id}").json()
    assert photo["id"] == image_id and photo["caption"] == photo["generated_caption"]
    assert photo["camera_make"] == "<b>Evil</b> Corp" and photo["taken_at"].startswith("2021-07-04")
    assert photo["image"] == f"/images/{image_id}" and photo["media_type"] == "image/jpeg"
    assert "embedding" not in photo
    ((x0, y0, x1, y1),) = [o["box"] for o in photo["objects"]]
    page = client.get(f"/photos/{image_id}").text
    assert f'<svg class="boxes" viewBox="0 0 {photo["width"]} {photo["height"]}"' in page
    assert f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}"' in page
    assert "48.858056° N, 2.294444° W" in page  # EXIF GPS as text, no link
    assert photo["path"] in page and photo["caption"] in page
    assert "2021-07-04 12:30:45" in page


def test_a_photo_that_could_not_be_read_has_a_page_but_no_file(client, library):
    (broken,) = [p for p in map(library.photo, range(1, 10)) if p and p["status"] == "error"]
    page = client.get(f"/photos/{broken['id']}")
    assert page.status_code == 200 and broken["error"] in page.text
    assert 'id="photo"' not in page.text and "Edit the caption" not in page.text
    assert client.get(f"/images/{broken['id']}").status_code == 404
    assert client.get(f"/thumbs/{broken['id']}").status_code == 404
    assert broken["id"] not in [r["id"] for r in client.get("/api/search").json()["results"]]


def test_unknown_ids_are_404(client):
    for url in ("/photos/999", "/api/images/999", "/images/999", "/thumbs/999",
                "/images/99999999999999999999999", "/photos/99999999999999999999999"):
        assert client.get(url).status_code == 404, url
    response = client.post("/api/images/999/caption", json={"caption": "x"}, headers={"origin": LOCAL})
    assert response.status_code == 404


def test_thumbnails_are_jpegs_with_caching_headers(client, library):
    image_id = id_of(library, "red.jpg")
    response = client.get(f"/thumbs/{image_id}")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.content[:2] == b"\xff\xd8"
    assert "max-age" in response.headers["cache-control"]
    etag = response.headers["etag"]
    assert library.photo(image_id)["sha256"] in etag
    again = client.get(f"/thumbs/{image_id}", headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b""
    assert client.get(f"/thumbs/{image_id}?size=17").status_code == 400


def test_the_photo_file_is_served_by_id(client, library):
    image_id = id_of(library, "red.jpg")
    response = client.get(f"/images/{image_id}")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.content == library.photo_path(image_id).read_bytes()
    assert response.headers["etag"] == f'"{library.photo(image_id)["sha256"]}"'
    assert client.get(f"/images/{image_id}",
                      headers={"if-none-match": response.headers["etag"]}).status_code == 304


# -- security -----------------------------------------------------------------------

class Recording:
    """The Library, with the names of the methods asked for recorded."""

    def __init__(self, library):
        self._library = library
        self.calls: list[str] = []

    def __getattr__(self, name):
        self.calls.append(name)
        return getattr(self._library, name)


TRAVERSALS = [
    "/images/../../etc/passwd", "/images/..%2f..%2fetc%2fpasswd", "/images/%2e%2e/%2e%2e/etc/passwd",
    "/images/%252e%252e%252fetc%252fpasswd", "/thumbs/..%2f..%2f..%2fetc%2fpasswd",
    "/images//etc/passwd", "/images/1/../../../etc/passwd", "/images/abc", "/images/1.0",
    "/images/-1", "/images/+1", "/images/1%00", "/images/0x1", "/images/1;/etc/passwd",
    "/thumbs/%2Fetc%2Fpasswd", "/static/../../../../etc/passwd", "/static/..%2f..%2f..%2fetc%2fpasswd",
    "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/api/images/..%2f1",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_gets_404_and_reads_nothing(library, path):
    spy = Recording(library)
    app = create_app(spy)
    with TestClient(app, base_url=LOCAL) as client:
        response = client.get(path)
    assert response.status_code == 404
    assert "root:" not in response.text
    assert not {"photo", "photo_path", "thumbnail"} & set(spy.calls)


def test_raw_dot_segments_reach_no_file(library):
    """The test client tidies "..": send the raw path as a browser-less client would."""
    import asyncio

    app = create_app(Recording(library))
    for raw in (b"/images/../../etc/passwd", b"/thumbs/..%2F..%2Fetc%2Fpasswd",
                b"/static/../../etc/passwd"):
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message, sent=sent):
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": raw.decode(), "raw_path": raw, "query_string": b"",
                 "root_path": "", "headers": [(b"host", b"127.0.0.1:8765")],
                 "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8765)}
        asyncio.run(app(scope, receive, send))
        assert sent[0]["status"] == 404, raw
        assert b"root:" not in b"".join(m.get("body", b"") for m in sent[1:])


def test_names_captions_exif_and_labels_are_escaped_everywhere(client, library):
    image_id = id_of(library, XSS_NAME)
    search = client.get("/", params={"q": "green"}).text
    photo = client.get(f"/photos/{image_id}").text
    trip = client.get(f"/photos/{id_of(library, 'trip.jpg')}").text
    for page in (search, photo):
        assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in page
        assert "<img src=x" not in page
    assert "&lt;svg onload=alert(2)&gt;" in photo and "<svg onload" not in photo
    assert "&lt;b&gt;Evil&lt;/b&gt; Corp Cam&#34;era &lt;i&gt;1&lt;/i&gt;" in trip
    assert "<b>Evil" not in trip and "<i>1" not in trip
    menus = client.get("/").text
    assert "<svg onload" not in menus and "<b>Evil" not in menus
    # JSON is JSON: the strings as they are, served as application/json
    api = client.get(f"/api/images/{image_id}")
    assert api.headers["content-type"] == "application/json" and api.json()["path"].endswith(XSS_NAME)


def test_pages_have_no_inline_script_and_every_answer_has_the_security_headers(client, library):
    assert inline_code('<p onclick="go()"><script>x()</script><script src="/a.js"></script>') == [
        "p onclick", "script"]
    image_id = id_of(library, "red.jpg")
    urls = ["/", "/?q=red", f"/photos/{image_id}", "/api/search?q=red", f"/api/images/{image_id}",
            f"/thumbs/{image_id}", f"/images/{image_id}", "/static/app.js", "/static/style.css",
            "/nowhere", "/api/nowhere", "/api/search?limit=x"]
    for url in urls:
        response = client.get(url)
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert response.headers["x-content-type-options"] == "nosniff", url
        assert response.headers["referrer-policy"] == "same-origin", url
        if response.headers["content-type"].startswith("text/html"):
            assert inline_code(response.text) == [], url


def inline_code(html: str) -> list[str]:
    """What a CSP without 'unsafe-inline' would block: script elements without src, event
    handler attributes (onclick=...), style attributes and style elements."""
    found = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag, attrs):
            names = {name for name, _ in attrs}
            if (tag == "script" and "src" not in names) or tag == "style":
                found.append(tag)
            found.extend(f"{tag} {name}" for name in names if name.startswith("on") or name == "style")

    Parser().feed(html)
    return found


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8765", "192.168.1.20:8765", ""])
def test_without_a_token_only_loopback_host_names_are_answered(app, host):
    with TestClient(app, base_url=LOCAL) as client:
        response = client.get("/api/search", headers={"host": host})
    assert response.status_code == 400 and "loopback" in response.text


@pytest.mark.parametrize("base", ["http://127.0.0.1:8765", "http://localhost:8765", "http://[::1]:8765",
                                  "http://127.0.0.2"])
def test_loopback_names_are_answered(app, base):
    with TestClient(app, base_url=base) as client:
        assert client.get("/api/search").status_code == 200


def test_a_token_is_required_on_every_request(library):
    app = create_app(library, token="s3cret-token")
    image_id = id_of(library, "red.jpg")
    with TestClient(app, base_url="http://192.168.1.20:8765") as client:
        for url in ("/", "/api/search", f"/images/{image_id}", f"/thumbs/{image_id}", "/static/app.js",
                    "/?token=wrong-token"):
            response = client.get(url)
            assert response.status_code == 401, url
            assert response.headers["content-type"].startswith("text/plain"), url
        assert client.get("/api/search", headers={"authorization": "Bearer s3cret-token"}).status_code == 200
        first = client.get("/?token=s3cret-token")
        assert first.status_code == 200
        cookie = first.headers["set-cookie"]
        assert "capindex_token=s3cret-token" in cookie
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert client.get(f"/images/{image_id}").status_code == 200  # the cookie from now on


def test_access_token_rules():
    assert access_token("127.0.0.1", None) is None
    assert access_token("localhost", None) is None
    assert access_token("::1", None) is None
    generated = access_token("0.0.0.0", None)
    assert generated and len(generated) >= 24 and generated != access_token("0.0.0.0", None)
    assert access_token("192.168.1.20", "given-token") == "given-token"
    assert access_token("127.0.0.1", "given-token") == "given-token"
    for bad in ("short", "has space in it", "semi;colon;token"):
        with pytest.raises(ValueError, match="at least 8 characters"):
            access_token("0.0.0.0", bad)


def test_a_caption_edit_needs_this_sites_origin_or_the_csrf_token(client, library):
    image_id = id_of(library, "blue.jpg")
    url = f"/api/images/{image_id}/caption"
    token = csrf_of(client.get(f"/photos/{image_id}").text)
    refused = [
        client.post(url, json={"caption": "no origin, no token"}),
        client.post(url, json={"caption": "forged"}, headers={"origin": "http://evil.example"}),
        client.post(url, json={"caption": "forged"}, headers={"origin": "null"}),
        client.post(url, json={"caption": "forged"}, headers={"origin": LOCAL + "0", "x-csrf-token": token}),
        client.post(url, json={"caption": "forged"}, headers={"sec-fetch-site": "cross-site",
                                                            "x-csrf-token": token}),
        client.post(url, json={"caption": "forged"}, headers={"x-csrf-token": "wrong"}),
        client.post(url, data={"caption": "forged", "csrf_token": "wrong"}),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
    assert library.photo(image_id)["user_caption"] is None
    assert client.get(url).status_code == 405
    try:
        ok = client.post(url, json={"caption": "by token"}, headers={"x-csrf-token": token})
        assert ok.status_code == 200 and ok.json()["caption"] == "by token"
        ok = client.post(url, json={"caption": "by origin"}, headers={"origin": LOCAL})
        assert ok.status_code == 200 and library.photo(image_id)["user_caption"] == "by origin"
        ok = client.post(url, json={"caption": "null origin, token"}, headers={"origin": "null",
                                                                             "x-csrf-token": token})
        assert ok.status_code == 200 and library.photo(image_id)["user_caption"] == "null origin, token"
    finally:
        library.revert_caption(image_id)


def test_edit_a_caption_on_the_page_find_it_and_revert(client, library):
    image_id = id_of(library, "blue.jpg")
    page = client.get(f"/photos/{image_id}").text
    generated = library.photo(image_id)["generated_caption"]
    form = {"caption": "Grandma's <script>alert(3)</script> zeppelin", "action": "save",
            "csrf_token": csrf_of(page)}
    try:
        response = client.post(f"/api/images/{image_id}/caption", data=form, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == f"/photos/{image_id}"
        page = client.get(f"/photos/{image_id}").text
        assert "Grandma&#39;s &lt;script&gt;alert(3)&lt;/script&gt; zeppelin" in page
        assert "<script>alert" not in page and generated in page and 'value="revert"' in page
        found = client.get("/api/search", params={"q": "zeppelin", "mode": "keyword"}).json()
        assert [r["id"] for r in found["results"]] == [image_id]
        assert found["results"][0]["caption"].endswith("zeppelin")
        revert = {"action": "revert", "csrf_token": csrf_of(page)}
        assert client.post(f"/api/images/{image_id}/caption", data=revert).status_code == 200
        photo = client.get(f"/api/images/{image_id}").json()
        assert photo["caption"] == generated and photo["user_caption"] is None
        assert client.get("/api/search", params={"q": "zeppelin", "mode": "keyword"}).json()["count"] == 0
    finally:
        library.revert_caption(image_id)


def test_a_bad_caption_edit_is_refused_with_the_reason(client, library):
    url = f"/api/images/{id_of(library, 'blue.jpg')}/caption"
    origin = {"origin": LOCAL}
    blank = client.post(url, json={"caption": "   "}, headers=origin)
    assert blank.status_code == 400 and "empty" in blank.json()["error"]
    form = client.post(url, data={"caption": " ", "action": "save"}, headers=origin)
    assert form.status_code == 400 and form.headers["content-type"].startswith("text/html")
    photo_page = url.removesuffix("/caption").replace("/api/images/", "/photos/")
    assert "the caption is empty" in form.text and f'href="{photo_page}"' in form.text
    assert client.post(url, json={"caption": "x" * 1001}, headers=origin).status_code == 400
    assert client.post(url, json={"caption": 7}, headers=origin).status_code == 400
    assert client.post(url, content=b"{not json", headers={**origin, "content-type": "application/json"}
                       ).status_code == 400
    assert client.post(url, content=b"caption", headers={**origin, "content-type": "text/plain"}
                       ).status_code == 415
    assert client.post(url, content=b"x" * 70_000, headers={**origin, "content-type": "application/json"}
                       ).status_code == 413


# -- caption an upload ------------------------------------------------------------

def test_an_upload_is_captioned_and_nothing_is_stored(client, library, tmp_path):
    before = sorted(p for p in library.root.rglob("*") if "thumbs" not in p.parts)
    count = library.count("")
    photo = solid(tmp_path / "upload.jpg", (220, 20, 20), size=(100, 60)).read_bytes()
    response = client.post("/api/caption", content=photo,
                           headers={"origin": LOCAL, "content-type": "image/jpeg"})
    assert response.status_code == 200, response.text
    described = response.json()
    assert described["caption"] == library.photo(id_of(library, "red.jpg"))["caption"] == "a dark red picture"
    assert (described["width"], described["height"]) == (100, 60)
    assert [o["label"] for o in described["objects"]] == ["dog"]
    assert sorted(p for p in library.root.rglob("*") if "thumbs" not in p.parts) == before
    assert library.count("") == count


def test_an_upload_needs_this_sites_origin_or_the_csrf_token(client, tmp_path):
    photo = solid(tmp_path / "upload.jpg").read_bytes()
    assert client.post("/api/caption", content=photo).status_code == 403
    assert client.post("/api/caption", content=photo,
                       headers={"origin": "http://evil.example"}).status_code == 403
    token = csrf_of(client.get("/").text)
    assert client.post("/api/caption", content=photo, headers={"x-csrf-token": token}).status_code == 200


def test_uploads_over_the_cap_are_refused_before_decoding(library, tmp_path):
    app = create_app(library, max_upload_mb=0.01, captioner=FakeCaptioner(), detector=fake_detector())
    big = bytes(11 * 1024)
    with TestClient(app, base_url=LOCAL) as client:
        declared = client.post("/api/caption", content=big, headers={"origin": LOCAL})
        assert declared.status_code == 413
        assert declared.json()["error"] == "the photo is larger than the upload limit (10,000 bytes)"
        streamed = client.post("/api/caption", content=(big[i:i + 1024] for i in range(0, len(big), 1024)),
                               headers={"origin": LOCAL})
        assert streamed.status_code == 413 and "upload limit" in streamed.json()["error"]
    assert create_app(library).state.serve.max_upload_bytes == 25 * 10**6


def test_an_upload_that_is_not_a_photo_or_a_bomb_is_explained(client, tmp_path):
    origin = {"origin": LOCAL}
    text = client.post("/api/caption", content=b"not a photo at all", headers=origin)
    assert text.status_code == 400 and text.json()["error"]
    bomb = huge_png(tmp_path / "bomb.png", 12_000, 12_000).read_bytes()  # 144 MP: ingest refuses it
    refused = client.post("/api/caption", content=bomb, headers=origin)
    assert refused.status_code == 400 and "pixels" in refused.json()["error"]
    assert client.post("/api/caption", content=b"", headers=origin).status_code == 400
    form = client.post("/api/caption", files={"photo": ("a.jpg", b"x", "image/jpeg")}, headers=origin)
    assert form.status_code == 415 and "--data-binary" in form.json()["error"]


# -- the library as it changes --------------------------------------------------------

def test_new_photos_appear_without_a_restart(tmp_path):
    photos = tmp_path / "photos"
    solid(photos / "first.jpg", (220, 20, 20))
    lib = capindex.Library(tmp_path / "lib")
    app = create_app(lib)
    with TestClient(app, base_url=LOCAL) as client:
        assert "Nothing is captioned yet" in client.get("/").text
        lib.ingest([photos], captioner=FakeCaptioner(), objects=False, workers=0)
        assert client.get("/api/search").json()["count"] == 1
        solid(photos / "newcomer.jpg", (20, 20, 220))
        lib.ingest([photos], captioner=FakeCaptioner(), objects=False, workers=0)
        found = client.get("/api/search", params={"q": "newcomer"}).json()["results"]
        assert [r["path"].rsplit("/", 1)[-1] for r in found] == ["newcomer.jpg"]
        assert client.get(found[0]["url"]).status_code == 200
        assert client.get(found[0]["thumbnail"]).status_code == 200
        assert client.get(found[0]["image"]).status_code == 200
        (photos / "newcomer.jpg").unlink()  # gone, not yet noticed by an ingest
        assert client.get(found[0]["image"]).status_code == 404
        assert client.get(found[0]["thumbnail"]).status_code == 404


def test_an_empty_library_says_how_to_fill_it(tmp_path):
    with TestClient(create_app(capindex.Library(tmp_path / "none")), base_url=LOCAL) as client:
        body = client.get("/api/search").json()
        assert (body["count"], body["results"]) == (0, []) and "capindex ingest" in body["message"]
        assert client.get("/api/facets").json()["cameras"] == []
        for url in ("/photos/1", "/api/images/1", "/images/1", "/thumbs/1"):
            assert client.get(url).status_code == 404, url
    assert not (tmp_path / "none").exists()


# -- the command --------------------------------------------------------------------

@pytest.fixture
def served(monkeypatch):
    """`capindex serve` up to the point where uvicorn would run: what it was given."""
    import uvicorn

    seen = {}

    def run(server, sockets):
        seen.update(app=server.config.app, sockets=sockets)
        for sock in sockets:
            sock.close()

    monkeypatch.setattr(uvicorn.Server, "run", run)
    return seen


def test_serve_prints_the_url_and_runs_the_app(served, tmp_path):
    result = CliRunner().invoke(main, ["serve", "--library", str(tmp_path / "lib"), "--port", "0"])
    assert result.exit_code == 2 and "--port" in result.output
    result = CliRunner().invoke(main, ["--library", str(tmp_path / "lib"), "serve", "--port", "18765"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"Serving {tmp_path / 'lib'} at http://127.0.0.1:18765/"
    assert served["app"].state.serve.library.root == tmp_path / "lib"
    assert served["sockets"][0].family.name == "AF_INET"


def test_serve_on_another_address_requires_a_token_and_prints_it(served, tmp_path):
    result = CliRunner().invoke(main, ["serve", "--library", str(tmp_path), "--host", "0.0.0.0",
                                       "--port", "18766"])
    assert result.exit_code == 0, result.output
    token = re.search(r"\?token=([\w-]+)$", result.output.splitlines()[0]).group(1)
    with TestClient(served["app"], base_url="http://192.168.1.20") as client:
        assert client.get("/api/search").status_code == 401
        assert client.get(f"/api/search?token={token}").status_code == 200
    bad = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--token", "short"])
    assert bad.exit_code == 2 and "at least 8 characters" in bad.output


def test_serve_says_when_the_port_is_taken(served, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", "--library", str(tmp_path), "--port", str(port)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot listen on 127.0.0.1:{port}: ")
    assert "Traceback" not in result.output


def test_serve_without_the_extra_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    result = CliRunner().invoke(main, ["serve", "--library", str(tmp_path)])
    assert result.exit_code == 1
    assert "pip install 'capindex[serve]'" in result.output


def test_the_package_ships_its_templates_and_static_files():
    from importlib.resources import files

    web = files("capindex.web")
    assert {p.name for p in (web / "static").iterdir()} >= {"app.js", "style.css"}
    assert (web / "templates" / "index.html").is_file()


def test_setup_cfg_packages_the_web_files():
    from pathlib import Path

    setup = (Path(__file__).resolve().parent.parent / "setup.cfg").read_text()
    assert "web/templates/*.html" in setup and "web/static/*.js" in setup and "web/static/*.css" in setup
