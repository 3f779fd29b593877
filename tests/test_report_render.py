"""The reports render in a real browser (headless Chromium) and every image on them loads.

Chromium is Debian's `chromium` package, installed by scripts/setup.sh (on CI, or with
RETAIN_INSTALL_CHROMIUM=1); where it is missing the tests are skipped, and the skip says why.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from retain.results.report import compare_runs, write_report
from tests.test_report import SCORES_A, SCORES_B, make_run, parse

CHECK_ID = "retain-img-check"
# Runs after the load event (which waits for every image): one record per <img>.
PROBE = f"""<script>
window.addEventListener("load", function () {{
  var out = Array.from(document.images).map(function (img) {{
    return {{src: img.getAttribute("src"), complete: img.complete, width: img.naturalWidth}};
  }});
  var pre = document.createElement("pre");
  pre.id = "{CHECK_ID}";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}});
</script>"""


def _browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium, which scripts/setup.sh installs (on CI, or asked to); no test
    installs packages."""
    found = _browser()
    if found is None:
        pytest.skip("headless Chromium is not installed: scripts/setup.sh installs it on CI or "
                    "with RETAIN_INSTALL_CHROMIUM=1 (as root with apt-get)")
    return found


def _run(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--user-data-dir={profile}", "--virtual-time-budget=10000", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def rendered_images(chromium: str, page: Path, profile: Path) -> tuple[list[dict], str]:
    """(what the browser reports for each <img>, the rendered DOM) of a page, loaded from its
    own folder so relative image paths resolve as a user's browser resolves them."""
    probe = page.with_name(f".probe-{page.name}")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"))
    try:
        done = _run(chromium, profile, "--dump-dom", probe.resolve().as_uri())
    finally:
        probe.unlink()
    found = re.search(rf'<pre id="{CHECK_ID}">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the page did not load in Chromium: {done.stderr[-500:]}"
    raw = found.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
    return json.loads(raw.replace("&amp;", "&")), done.stdout


def assert_all_images_load(chromium: str, page: Path, profile: Path) -> str:
    images, dom = rendered_images(chromium, page, profile)
    expected = parse(page).images
    assert [i["src"] for i in images] == expected and expected
    broken = [i["src"] for i in images if not (i["complete"] and i["width"] > 0)]
    assert not broken, f"images that did not load: {broken}"
    return dom


def test_the_image_check_catches_a_missing_image(chromium, tmp_path):
    page = tmp_path / "page.html"
    page.write_text('<!DOCTYPE html><html><body><img src="nope.png"></body></html>')
    images, _ = rendered_images(chromium, page, tmp_path / "profile")
    assert images == [{"src": "nope.png", "complete": True, "width": 0}]


def test_run_report_renders_with_every_image(chromium, tmp_path):
    run = make_run(tmp_path, "mssr", SCORES_A, n=20)
    dom = assert_all_images_load(chromium, write_report(run), tmp_path / "profile")
    assert "retain run: mssr" in dom and "differences of a few points are noise" in dom


def test_comparison_renders_with_every_image_and_reads_well(chromium, tmp_path):
    a = make_run(tmp_path, "sequential", SCORES_B, replay=False, methods=("sequential",))
    b = make_run(tmp_path, "mssr", SCORES_A)
    write_report(a)
    out = compare_runs([a, b], tmp_path / "cmp")
    dom = assert_all_images_load(chromium, out, tmp_path / "profile")
    assert "Paired difference against the baseline sequential" in dom
    shot = tmp_path / "comparison.png"
    done = _run(chromium, tmp_path / "profile", "--window-size=1280,2400",
                f"--screenshot={shot}", out.resolve().as_uri())  # fmt: skip
    assert shot.exists(), done.stderr[-500:]
    img = matplotlib.image.imread(shot)
    assert img.shape[:2] == (2400, 1280)
    assert float(np.std(img[..., :3])) > 0.05  # not a blank page
