"""Time from choosing an image in the reviewer to its CAM overlay on screen, in a real browser.

Starts the real server (``medcam review FOLDER --db TMP --port FREE --model MODEL``), opens it
in Debian's Chromium driven by Playwright, and for every image of the folder measures the
time from the click on its entry in the "Image" list to the moment the overlay picture is
decoded in the page (``img.complete && naturalWidth > 0`` on the ``<img>`` whose alt names
the image). The first view of an image is *cold* (read, classify, maps, regions, draw,
send); later views are *warm* (the prediction is cached by file content hash and model id;
regions, drawing and the transfer are done again). It prints one line per image and the
medians.

    python benchmarks/bench_review.py                       # sample_data, untrained DenseNet121 at 224 px
    python benchmarks/bench_review.py --model bundled --screenshot docs/app.png

Without ``--model`` the checkpoint is a seeded, untrained DenseNet121 at the default input
size (224): weights do not change the cost. Needs ``pip install -e ".[test]"`` (Streamlit,
Playwright) and ``apt-get install chromium``; Playwright's own browser download is not used.

The functions above ``main`` drive the app for ``tests/test_review_e2e.py`` too.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/lib/chromium/chromium")  # /usr/bin/chromium is a wrapper script
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
VIEWPORT = {"width": 1600, "height": 1250}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(folder: Path, db: Path, model: str, *, port: int | None = None, log: Path | None = None,
           timeout: float = 120.0) -> Iterator[str]:
    """Run ``medcam review`` until the block ends; yields its URL once it answers."""
    port = port or free_port()
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    process = subprocess.Popen([sys.executable, "-m", "medcam", "review", str(folder), "--db", str(db),
                                "--port", str(port), "--model", model],
                               stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"medcam review exited with {process.returncode}" + (f"; see {log}" if log else ""))
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"medcam review did not answer on {url} within {timeout:.0f} s")
            time.sleep(0.3)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # the launcher and its Streamlit child
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if log:
            out.close()  # type: ignore[union-attr]


def launch_browser(playwright: Any) -> Any:
    """Headless Debian Chromium (never Playwright's own download)."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)


def open_app(browser: Any, url: str, *, timeout_s: float = 180.0) -> Any:
    """A new page on the app, once its worklist is scored and the image list is there."""
    page = browser.new_page(viewport=VIEWPORT, accept_downloads=True)
    page.goto(url)
    page.get_by_role("combobox", name="Image").wait_for(timeout=timeout_s * 1000)
    return page


def set_reviewer(page: Any, name: str) -> None:
    box = page.get_by_role("textbox", name="Reviewer name")
    box.fill(name)
    box.press("Enter")
    page.wait_for_function("n => document.querySelector('input[aria-label=\"Reviewer name\"]').value === n",
                           arg=name)


def wait_overlay(page: Any, name: str, threshold: str | None = None, *, timeout_s: float = 120.0) -> None:
    """Until the overlay of ``name`` (at ``threshold``, e.g. ``fraction:0.40``) is decoded on screen."""
    page.wait_for_function(
        """([name, threshold]) => [...document.querySelectorAll('img[alt^="overlay "]')].some(i =>
               i.alt.startsWith('overlay ' + name + ' ') && (!threshold || i.alt.endsWith(' ' + threshold))
               && i.complete && i.naturalWidth > 0)""",
        arg=[name, threshold or ""], timeout=timeout_s * 1000)


def select_image(page: Any, name: str) -> float:
    """Choose ``name`` in the image list; seconds from the click to its overlay on screen."""
    box = page.get_by_role("combobox", name="Image")
    box.click()
    box.fill(name)  # typing filters the list and opens it, whatever is chosen now
    option = page.get_by_role("option", name=name, exact=False).first
    option.wait_for()
    start = time.perf_counter()
    option.click()
    wait_overlay(page, name)
    return time.perf_counter() - start


def nudge_slider(page: Any, label: str, direction: int) -> str:
    """Move a slider one step up (``direction`` 1) or down (-1) with the keyboard; returns its
    new value as shown. One step per call: each step makes the app run again, and a second key
    press during that run can be overwritten by it."""
    thumb = page.locator(f'input[type="range"][aria-label="{label}"]')
    before = thumb.input_value()
    thumb.focus()
    thumb.press("ArrowRight" if direction > 0 else "ArrowLeft")
    page.wait_for_function("([label, before]) => document.querySelector(`input[type=range][aria-label=\"${label}\"]`)"
                           ".value !== before", arg=[label, before])
    return str(thumb.get_attribute("aria-valuetext"))


def screenshot(page: Any, name: str, path: Path) -> None:
    """The app with ``name`` chosen and its first region accepted (when it has one)."""
    select_image(page, name)
    accept = page.get_by_role("button", name="Accept 1", exact=True)
    if accept.count():
        accept.click()
        page.get_by_text(re.compile(r"^Region 1 · .* · accept$")).wait_for()
    page.set_viewport_size({"width": 1600, "height": 1700})  # tall enough for the regions and their buttons
    page.get_by_role("combobox", name="Image").scroll_into_view_if_needed()
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    page.set_viewport_size(VIEWPORT)


def untrained_checkpoint(folder: Path) -> Path:
    """A seeded, untrained DenseNet121 at the default preprocessing (224 px)."""
    import torch

    from medcam.config import ModelConfig, PreprocessConfig
    from medcam.models import build_network, save_checkpoint

    torch.manual_seed(0)
    path = folder / "untrained.pt"
    save_checkpoint(path, build_network(ModelConfig()).eval(), ModelConfig(), PreprocessConfig(), trained=False)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=REPO / "sample_data", help="images (default: sample_data)")
    parser.add_argument("--model", help="checkpoint path or 'bundled' (default: untrained DenseNet121, 224 px)")
    parser.add_argument("--repeats", type=int, default=3, help="warm views of each image (default: 3)")
    parser.add_argument("--screenshot", type=Path, help="write a screenshot of the app with the first image")
    args = parser.parse_args()
    if not CHROMIUM.is_file():
        sys.exit(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    from medcam.io.discover import iter_images

    names = sorted({p.name for p in iter_images([args.folder])})
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(untrained_checkpoint(Path(tmp)))
        with server(args.folder, Path(tmp) / "review.db", model, log=Path(tmp) / "server.log") as url, \
                sync_playwright() as playwright:
            browser = launch_browser(playwright)
            start = time.perf_counter()
            page = open_app(browser, url)
            print(f"app ready with {len(names)} images scored in {time.perf_counter() - start:.1f} s")
            set_reviewer(page, "benchmark")
            cold, warm = [], []
            for name in names:
                cold.append(select_image(page, name))
                print(f"{name:24s} cold {cold[-1]:.2f} s")
            for _ in range(args.repeats):
                for name in names:
                    warm.append(select_image(page, name))
            print(f"select -> overlay on screen: median of {len(cold)} cold views {statistics.median(cold):.2f} s "
                  f"(max {max(cold):.2f})")
            if warm:
                print(f"select -> overlay on screen: median of {len(warm)} warm views {statistics.median(warm):.2f} s "
                      f"(max {max(warm):.2f})")
            if args.screenshot:
                screenshot(page, next((n for n in names if n.lower().endswith(".dcm")), names[0]), args.screenshot)
                print(f"wrote {args.screenshot}")
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
