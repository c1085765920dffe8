"""Headless Chromium for tests that look at rendered pages (Debian's ``chromium`` package).

Found without the Makefile: ``LEANSCORE_CHROMIUM`` (a path), else the first of the usual
names on PATH. ``screenshot`` renders a local HTML file offline into a PNG."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    given = os.environ.get("LEANSCORE_CHROMIUM")
    if given:
        return given if Path(given).is_file() else None
    return next((p for p in map(shutil.which, NAMES) if p), None)


def screenshot(page: Path, png: Path, *, width: int = 1200, height: int = 6000) -> Path:
    browser = find_chromium()
    if browser is None:
        raise FileNotFoundError(
            "no headless Chromium: install Debian's package (apt-get install -y chromium) or "
            "set LEANSCORE_CHROMIUM to the browser's path"
        )
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",  # tests run as root in containers
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={png.parent / 'chromium-profile'}",
            f"--window-size={width},{height}",
            f"--screenshot={png}",
            page.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return png


def color_pixels(png: Path, hex_color: str, *, tolerance: int = 12) -> int:
    """How many pixels of ``png`` are within ``tolerance`` of ``hex_color`` in every channel."""
    import numpy as np
    from PIL import Image

    want = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    return int((np.abs(pixels - want) <= tolerance).all(axis=-1).sum())
