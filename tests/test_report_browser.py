"""valley-report's page in a real browser: headless Chromium renders index.html to a PNG and to its DOM.

Skipped when Chromium is not installed (Debian: ``apt-get install -y chromium``). Every Chromium process runs in its
own session with a private profile directory, under a timeout; on a timeout its process group is killed, and any
process still holding the profile afterwards is killed by PID, so nothing is left behind.
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bench.analysis.synthetic import SyntheticConfig, generate
from bench.report import cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
TIMEOUT_S = 60
WIDTH = 1400
SECTIONS = ("Summary", "Coverage: what is missing", "Main results", "One-shot vs tuned",
            "Is there a single best optimizer?", "Switching optimizers: relative improvement A → B",
            "Random search: expected best of k trials", "Learning curves", "Compute cost", "Files")
PROBE = """<script>window.addEventListener('load', function () {
  var d = document.createElement('pre'); d.id = 'probe';
  d.textContent = JSON.stringify({scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
    images: Array.from(document.images).map(function (i) { return [i.naturalWidth, i.clientWidth, i.complete]; })});
  document.body.appendChild(d);
});</script>"""
"""Appended to a copy of the page: after load, writes what only a browser knows into the DOM (page width, the
displayed size of every figure)."""


def _holding(profile: Path) -> list[int]:
    """PIDs of processes whose command line names this run's profile directory (only our Chromium does)."""
    needle = str(profile).encode()
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if needle in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def chromium(url: str, tmp_path: Path, *args: str) -> str:
    """Run headless Chromium on ``url``; return its stdout. Leaves no process behind."""
    profile = Path(tmp_path) / f"profile-{time.monotonic_ns()}"
    profile.mkdir()
    cmd = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
           "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={WIDTH},1600", *args, url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish within {TIMEOUT_S} s")
    finally:
        deadline = time.monotonic() + 5.0
        while _holding(profile) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in _holding(profile):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert not _holding(profile), "chromium processes left behind"
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode(errors="replace")


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    generate(root, SyntheticConfig(n_problems=2, n_optimizers=4, n_schedules=2, n_trials=4, epoch_scale=0.04))
    assert cli.main([str(root)]) == 0
    return root / "report" / "index.html"


def lead(index: Path) -> str:
    """The summary sentence at the top of the page, as text."""
    m = re.search(r"<p class='lead'>(.*?)</p>", index.read_text(), re.S)
    assert m, "no summary sentence"
    return html.unescape(m.group(1))


def test_page_renders_to_a_non_blank_screenshot(page: Path, tmp_path: Path) -> None:
    import matplotlib.image

    png = tmp_path / "page.png"
    chromium(page.as_uri(), tmp_path, f"--screenshot={png}")
    assert png.is_file() and png.stat().st_size > 10_000
    img = matplotlib.image.imread(png)[..., :3]
    assert img.shape[1] == WIDTH
    ink = (img < 0.9).any(axis=2).mean()                     # share of pixels that are not (near) white
    assert ink > 0.02, f"screenshot is blank ({ink:.1%} ink)"
    assert len({tuple(px) for px in (img[::7, ::7] * 255).astype(int).reshape(-1, 3)}) > 50   # text, figures


def test_page_text_has_the_summary_every_section_and_unshrunk_figures(page: Path, tmp_path: Path) -> None:
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = chromium(probe.as_uri(), tmp_path, "--dump-dom")
    m = re.search(r"<pre id=\"probe\">(.*?)</pre>", dom, re.S)
    assert m, "the page did not finish loading"
    facts = json.loads(html.unescape(m.group(1)))
    text = re.sub(r"<style.*?</style>|<script.*?</script>", " ", dom, flags=re.S)
    text = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)))
    sentence = lead(page)
    assert sentence.startswith(("No single optimizer is best", "A single best optimizer exists")), sentence
    assert re.sub(r"\s+", " ", sentence) in text
    for section in SECTIONS:
        assert section in text, section
    assert facts["scrollWidth"] <= facts["innerWidth"], facts         # no horizontal scrolling of the page
    assert len(facts["images"]) >= 10
    for natural, shown, complete in facts["images"]:
        assert complete and natural > 0 and shown == natural, facts["images"]   # every figure shown 1:1
