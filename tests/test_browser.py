"""The results page and the web demo in a real browser: headless Chromium (Debian's chromium and
chromium-driver, installed by .ci/run) driven by Selenium.

One tiny pix2pix (32 px, ngf 8) is trained once for the module; its final test writes the results page,
and its last.ckpt serves the demo. Screenshots land in the tests' tmp folders (pytest prints none;
``--basetemp`` keeps them where you want them).
"""

import csv
import json
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import compose_run
from fundus2ffa.run import run

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1800")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A trained and tested tiny pix2pix run folder (3 test images)."""
    out = tmp_path_factory.mktemp("browser") / "run"
    cfg = compose_run(
        ["debug=smoke", "data.reader.num_pairs=24", "data.image_size=32", "generator=resnet_9blocks",
         "generator.n_blocks=2", "trainer.limit_test_batches=1.0", "logger=csv", "trainer.max_epochs=3"],
        out,
    )
    run(cfg)
    return out


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _column(driver, table: str, index: int) -> list[str]:
    return driver.execute_script(
        "var col = arguments[1]; return Array.from(document.querySelectorAll(arguments[0] + ' tbody tr'))"
        ".map(function (r) { return r.cells[col].dataset.v; });", table, index)


def test_results_page_images_resolve_and_sorting_works(trained_run, browser, tmp_path):
    page = trained_run / "results" / "index.html"
    rows = list(csv.DictReader((trained_run / "test_per_image.csv").open()))
    assert len(rows) == 3
    browser.get(page.as_uri())

    images = browser.find_elements("css selector", "#per-image img")
    assert len(images) == 4 * len(rows)  # CF | real | generated | error per test image
    sizes = [browser.execute_script("return arguments[0].complete ? arguments[0].naturalWidth : 0;", img) for img in images]
    assert all(width == 32 for width in sizes), sizes
    srcs = [img.get_attribute("src") for img in images]
    assert all(src.startswith("file://") and "/results/images/" in src for src in srcs)  # referenced, not inlined

    headers = browser.find_elements("css selector", "#per-image th[data-col]")
    names = [h.text.strip(" \u25b2\u25bc") for h in headers]
    psnr = headers[names.index("psnr")]
    col = int(psnr.get_attribute("data-col"))
    expected = sorted(float(r["psnr"]) for r in rows)  # independent of the page: the CSV
    psnr.click()
    assert [float(v) for v in _column(browser, "#per-image", col)] == pytest.approx(expected)
    psnr.click()
    assert [float(v) for v in _column(browser, "#per-image", col)] == pytest.approx(expected[::-1])
    ids = headers[names.index("id")]
    ids.click()
    assert _column(browser, "#per-image", 0) == sorted(r["id"] for r in rows)

    summary = browser.find_element("css selector", "#summary").text
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert "this run (test)" in summary and f"{metrics['test']['psnr']:.4g}" in summary
    assert "optimized_metric: val/psnr" in browser.find_element("css selector", "pre").text
    browser.save_screenshot(str(tmp_path / "results_page.png"))


def _loaded(driver, element) -> tuple[int, int]:
    return tuple(driver.execute_script(
        "var i = arguments[0]; return i.complete ? [i.naturalWidth, i.naturalHeight] : [0, 0];", element))


def test_results_page_shows_training_curves_and_samples_per_epoch(trained_run, browser, tmp_path):
    """The curves (SVG files drawn from history.csv) and the per-epoch sample grids load; the metric columns
    are in view beside the thumbnails; the fitted baseline values are a note, not a table row."""
    from fundus2ffa.plots import read_history

    history = read_history(trained_run / "history.csv")
    assert [int(r["epoch"]) for r in history] == [0, 1, 2]
    browser.get((trained_run / "results" / "index.html").as_uri())

    curves = browser.find_elements("css selector", "#curves img")
    titles = [c.get_attribute("alt") for c in curves]
    assert "G loss (weighted total)" in titles and "D loss (total and terms)" in titles and "validation PSNR" in titles
    for curve in curves:
        width, height = _loaded(browser, curve)
        assert width > 0 and height > 0, curve.get_attribute("src")
        assert curve.get_attribute("src").endswith(".svg")
    # the PSNR curve has one point per epoch, at the values history.csv holds
    psnr_svg = next(c for c in curves if c.get_attribute("alt") == "validation PSNR").get_attribute("src")
    svg = Path(psnr_svg.removeprefix("file://")).read_text()
    assert 'data-name="val/psnr"' in svg and f"(last {history[-1]['val/psnr']:.4g})" in svg

    samples = browser.find_elements("css selector", "#samples img")
    assert len(samples) == len(list((trained_run / "samples").glob("epoch_*.png"))) == 3
    assert all(_loaded(browser, img)[0] > 0 for img in samples)
    captions = [f.text for f in browser.find_elements("css selector", "#samples figcaption")]
    assert captions[-1] == f"epoch_0002 · val psnr {history[-1]['val/psnr']:.3g}"

    # metrics beside the thumbnails: the psnr column is within the window without scrolling sideways
    psnr = next(h for h in browser.find_elements("css selector", "#per-image th") if h.text.strip(" \u25b2\u25bc") == "psnr")
    right = browser.execute_script("return arguments[0].getBoundingClientRect().right;", psnr)
    assert right <= browser.execute_script("return window.innerWidth;")
    summary = browser.find_element("css selector", "#summary").text
    assert "baseline fit" not in summary and "baseline constant" in summary
    assert "training FFA mean" in browser.find_element("css selector", "#fitted").text
    browser.save_screenshot(str(tmp_path / "results_page_curves.png"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(predicate, timeout: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_demo_upload_round_trip(trained_run, browser, tmp_path):
    from fundus2ffa.app import launch, load_config
    from fundus2ffa.data.synthetic.retina import synthesize_eye

    ckpt = trained_run / "checkpoints" / "last.ckpt"
    port = _free_port()
    cfg = load_config([f"ckpt_path={ckpt}", f"port={port}", "device=cpu"])  # the 32 px training size from the checkpoint
    app, url, _ = launch(cfg, prevent_thread_lock=True)
    try:
        assert url.startswith(f"http://127.0.0.1:{port}")  # loopback by default
        # a CF of a size the model was not trained at, as TIFF
        cf = synthesize_eye(7, size=160, width=240).cf
        upload = tmp_path / "my eye.tif"
        Image.fromarray(cf).save(upload)
        browser.get(url)
        file_input = _wait(lambda: browser.find_elements("css selector", "#upload input[type=file]"), what="the upload field")
        file_input[0].send_keys(str(upload))
        generated = _wait(lambda: browser.find_elements("css selector", "#generated img"), what="the generated image")
        width = _wait(lambda: browser.execute_script(
            "return arguments[0].complete ? arguments[0].naturalWidth : 0;", generated[0]), what="the image to load")
        assert width == 240  # the generated FFA comes back at the upload's resolution
        status = browser.find_element("css selector", "#status").text
        assert "Generated with" in status and "240 x 160" in status
        # the compare slider shows the whole image, not enlarged or cropped
        for image in browser.find_elements("css selector", "#compare img"):
            fit, box = browser.execute_script(
                "var i = arguments[0], r = i.getBoundingClientRect(); return [getComputedStyle(i).objectFit, [r.width, r.height]];",
                image)
            assert fit == "scale-down" and _loaded(browser, image) == (240, 160)
            assert box[0] >= 240 and box[1] >= 160
        browser.save_screenshot(str(tmp_path / "demo.png"))

        # an example image is one click away: a synthetic eye, translated at its own size
        from fundus2ffa.app import example_images

        examples = browser.find_elements("css selector", "#examples button")
        assert [b.text for b in examples] == [p.stem.replace("_", " ") for p in example_images()] and examples
        examples[0].click()
        expected = Image.open(example_images()[0]).size
        _wait(lambda: f"{expected[0]} x {expected[1]}" in browser.find_element("css selector", "#status").text,
              what="the example's translation")
        generated = browser.find_elements("css selector", "#generated img")
        assert _wait(lambda: _loaded(browser, generated[0])[0], what="the image to load") == expected[0]
        browser.save_screenshot(str(tmp_path / "demo_example.png"))

        # a corrupt upload: the reason is shown in the page
        bad = tmp_path / "broken.png"
        bad.write_bytes(b"not a png at all")
        clear = [b for b in browser.find_elements("css selector", "#upload button")
                 if (b.get_attribute("aria-label") or "").lower() in ("clear", "remove")]
        assert clear, [b.get_attribute("aria-label") for b in browser.find_elements("css selector", "#upload button")]
        clear[0].click()
        _wait(lambda: browser.find_elements("css selector", "#upload input[type=file]"), what="the cleared upload field")[0].send_keys(str(bad))
        message = _wait(lambda: "Cannot use this upload" in browser.find_element("css selector", "#status").text
                        and browser.find_element("css selector", "#status").text, what="the error message")
        assert "broken.png" in message and "not an image" in message
        browser.save_screenshot(str(tmp_path / "demo_bad_upload.png"))
    finally:
        from gradio import close_all

        close_all()
    assert Image.open(tmp_path / "demo.png").size[0] > 0
