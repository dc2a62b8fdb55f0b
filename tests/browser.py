"""Headless Chromium for the tests of the HTML report and the viewer pages (skips, saying why,
where Chromium is not installed)."""

import re
import shutil
import subprocess

import pytest

from oodseg.viewer import Layer, ood_count, quantise


def headless_dom(url: str) -> tuple[str, str]:
    """The DOM of a page after its scripts ran in headless Chromium, and the browser's log."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (make test installs it from the Debian packages)")
    run = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=10000",
            "--enable-logging=stderr",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return run.stdout, run.stderr


def check_viewer(page, layer: Layer, sizes: tuple[int, int], max_bytes: int) -> None:
    """The viewer page loads without an error, draws the model's K+1 map at its threshold, and
    moving the slider redraws as many OOD pixels as Python counts at that level."""
    assert page.stat().st_size < max_bytes
    _, level, _ = quantise(layer.scores, layer.threshold)
    assert ood_count(layer) == int((layer.scores < layer.threshold).sum())
    for at in (None, max(1, level - 40), min(255, level + 25)):
        dom, log = headless_dom(page.as_uri() + ("" if at is None else f"#level={at}"))
        body = re.search(r"<body[^>]*>", dom).group(0)
        assert 'data-ready="1"' in body and "data-errors" not in body, body
        assert "Uncaught" not in log and "CONSOLE" not in log, log[-2000:]
        assert f'data-ood="{ood_count(layer, at)}"' in body, (at, body)
        assert f'data-level="{level if at is None else at}"' in body
    assert sizes == layer.scores.shape
