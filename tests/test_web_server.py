"""The web UI served on loopback: gradio_client gets `difflab sample`'s bytes, the served
HTML/CSS/JS loads nothing from other hosts, headless Chromium renders the page with networking
blocked, jobs queue one at a time, and bad input comes back as a message."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
from PIL import Image
from requires import SETUP, require_module
from tiny_models import save_run

from difflab.cli.main import build_parser, main

require_module("gradio")
Client = require_module("gradio_client").Client
from difflab.web import jobs  # noqa: E402
from difflab.web.app import theme  # noqa: E402
from difflab.web.serve import launch  # noqa: E402

SETTINGS = dict(sampler="euler_ancestral", options="", steps=4, discretization="karras",
                guidance="cfg:scale=2", seed=5, n=3)  # fmt: skip
NEW_INPUTS = (1, 1, 0.0, None)  # RePaint jump length, resample, aug_level, reference images
LOCAL = {"127.0.0.1", "localhost"}
# Places a page fetches from: src=, <link href=>, CSS url() and @import, JS imports.
FETCH = re.compile(
    r"""\bsrc\s*=\s*["'`]([^"'`]+)|<link\b[^>]*\bhref\s*=\s*["'`]([^"'`]+)|url\(\s*["'`]?([^"'`)\s]+)"""
    r"""|@import\s+(?:url\()?["'`]?([^"'`)\s;]+)|\bimport\s*\(\s*["'`]([^"'`]+)"""
    r"""|\bfrom\s*["'`]([^"'`]+)["'`]|\bimport\s*["'`]([^"'`]+)["'`]"""
)
URL = re.compile(r"https?://[^\s\"'`)]+")
FONT_OR_CDN = re.compile(r"fonts\.g|\.woff2?\b|\.ttf\b|\.otf\b|cdn", re.I)
# Gradio's Hugging Face Spaces header (it adds Google-Fonts links and fetches avatars) is in the
# loaded bundle but returns at once unless the page runs on a Space; the net-log test shows that
# nothing is fetched. Only those URLs, only in the file that holds that script, are let through.
SPACES_HEADER = ("https://fonts.googleapis.com/css2?family=Source+Sans+Pro",
                 "https://fonts.googleapis.com/css2?family=IBM+Plex+Mono", "https://huggingface.co/api/")


def external_fetches(text: str, base: str) -> list[str]:
    """URLs on other hosts that `text` (HTML, CSS or JS served at `base`) would fetch."""
    found = [next(g for g in m.groups() if g) for m in FETCH.finditer(text)]
    found += [u for u in URL.findall(text) if FONT_OR_CDN.search(u)]
    urls = [urllib.parse.urljoin(base, u) for u in found]
    spaces = "Space not found" in text
    return sorted({u for u in urls
                   if u.startswith(("http:", "https:")) and urllib.parse.urlparse(u).hostname
                   not in LOCAL and not (spaces and u.startswith(SPACES_HEADER))})


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(f"chromium is not installed: run `sudo apt-get install chromium`; {SETUP}",
                    pytrace=False)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    save_run(root / "cls", "class")
    save_run(root / "text", "text")
    return root


@pytest.fixture(scope="module")
def server(root, tmp_path_factory):
    app, url = launch(root, port=None, block=False, out=tmp_path_factory.mktemp("web-out"))
    yield app, url
    app.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server[1], verbose=False)


def predict(client, label="cls", **over):
    s = {**SETTINGS, **over}
    return client.predict(label, s["sampler"], s["options"], s["steps"], s["discretization"],
                          s["guidance"], s["seed"], s["n"], [], "", "", None, None, 0.6, 2,
                          *NEW_INPUTS, api_name="/generate")  # fmt: skip


def test_loopback_client_gets_the_bytes_of_difflab_sample(root, client, tmp_path):
    assert main(["sample", str(root / "cls"), "--out", str(tmp_path), "-n", "3", "--seed", "5",
                 "--steps", "4", "--sampler", "euler_ancestral", "--guidance", "cfg:scale=2",
                 "--quiet"]) == 0  # fmt: skip
    preview, progress, gallery = predict(client)
    assert 'value="4" max="4"' in progress
    cli = sorted((tmp_path / "images").glob("*.png"))
    assert [open(g["image"], "rb").read() for g in gallery] == [p.read_bytes() for p in cli]


def test_bad_input_comes_back_as_a_message(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="unknown sampler 'nope'; choose one of") as err:
        predict(client, sampler="nope")
    assert "Traceback" not in str(err.value)
    with pytest.raises(AppError, match="the prompt is empty"):
        predict(client, "text", n=1)


def test_one_job_runs_at_a_time(client, monkeypatch):
    """Two submissions at once (two tabs): the second starts when the first has finished."""
    spans, run = [], jobs.run

    def timed(*args, **kwargs):
        start = time.perf_counter()
        out = run(*args, **kwargs)
        spans.append((start, time.perf_counter()))
        return out

    monkeypatch.setattr(jobs, "run", timed)
    s = {**SETTINGS, "steps": 30, "n": 2}
    args = ("cls", s["sampler"], "", s["steps"], "karras", "", 0, s["n"], [], "", "", None, None,
            0.6, 10, *NEW_INPUTS)  # fmt: skip
    pending = [client.submit(*args, api_name="/generate") for _ in range(2)]
    for job in pending:
        job.result(timeout=120)
    (a0, a1), (b0, b1) = sorted(spans)
    assert len(spans) == 2 and b0 >= a1


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
    """Headless Chromium on the page with networking blocked (a dead proxy for every host but
    loopback): (its flags, the screenshot, the URLs the page requested, from its net log)."""
    tmp = tmp_path_factory.mktemp("chromium")
    flags = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=127.0.0.1;localhost",
             f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=20000"]  # fmt: skip
    shot, log = tmp / "ui.png", tmp / "net.json"
    done = subprocess.run([*flags, "--window-size=1400,1100", f"--screenshot={shot}",
                           f"--log-net-log={log}", server[1]], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    origin = server[1].rstrip("/")
    events = json.loads(log.read_text())["events"]
    urls = sorted({e["params"]["url"] for e in events
                   if e.get("params", {}).get("initiator") == origin and "url" in e["params"]})
    return flags, shot, urls


def test_the_page_requests_nothing_from_other_hosts(browser):
    urls = browser[2]
    assert any(u.endswith(".js") for u in urls) and any(u.endswith(".css") for u in urls)
    assert [u for u in urls if urllib.parse.urlparse(u).hostname not in LOCAL] == []


def test_served_html_css_js_name_no_font_script_or_stylesheet_elsewhere(server, browser):
    """The page, its theme and every file the browser loaded, scanned for external fetches."""
    pages = [server[1], urllib.parse.urljoin(server[1], "theme.css")]
    pages += [u for u in browser[2] if u.endswith((".js", ".css"))]
    bad = {}
    for page in pages:
        text = urllib.request.urlopen(page, timeout=30).read().decode("utf-8", "replace")
        bad.update({u: page for u in external_fetches(text, page)})
    assert len(pages) > 20 and not bad, bad


def test_the_scanner_finds_fonts_scripts_and_stylesheets_elsewhere():
    page = ('<link rel="stylesheet" href="https://fonts.googleapis.com/css2?family=Inter">'
            '<script src="https://cdn.example.org/x.js"></script><a href="https://gradio.app">')
    css = "@import url('https://fonts.googleapis.com/x'); .a{src: url(./font.woff2)}"
    js = 'import("https://esm.sh/m.js");const f="https://fonts.gstatic.com/s/a.woff2"'
    spaces = 'e.href=`https://fonts.googleapis.com/css2?family=Source+Sans+Pro`'
    base = "http://127.0.0.1:1/"
    assert len(external_fetches(page, base)) == 2  # the link to gradio.app is not fetched
    assert external_fetches(css, base) == ["https://fonts.googleapis.com/x"]
    assert len(external_fetches(js, base)) == 2
    assert len(external_fetches(spaces, base)) == 1  # outside the Spaces header script: flagged
    assert external_fetches(spaces + "('Space not found')", base) == []


def test_offline_by_default(server):
    import os

    from gradio.themes import GoogleFont

    app, url = server
    assert urllib.parse.urlparse(url).hostname == "127.0.0.1"
    assert build_parser().parse_args(["serve", "runs"]).host == "127.0.0.1"
    assert app.analytics_enabled is False and os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    fonts = list(theme()._font) + list(theme()._font_mono)
    assert not any(isinstance(f, GoogleFont) for f in fonts)
    generate = next(f for f in app.fns.values() if f.api_name == "generate")
    assert generate.concurrency_limit == 1


def test_headless_chromium_renders_the_page_offline(server, browser):
    flags, shot, _ = browser
    colours = Image.open(shot).convert("RGB").getcolors(1 << 16)
    assert colours is not None and len(colours) > 20  # a rendered page, not a blank one
    dom = subprocess.run([*flags, "--dump-dom", server[1]], capture_output=True, text=True,
                         timeout=120).stdout  # fmt: skip
    assert "Generate" in dom and "x̂0 preview" in dom and "guidance chain" in dom
