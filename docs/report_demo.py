"""Make the batch report shown in the README: 100 small stacks fused with ``pdmfuse batch
--report``, and a screenshot of the page in headless Chromium.

Run from the repository root (needs the real stacks of ../shared/data or PDMFUSE_DATA, and
Chromium, e.g. ``apt-get install chromium``):

    python docs/report_demo.py [WORK_FOLDER]

The stacks are crops and reductions of the permissively licensed real stacks (diatom, keyboard
sweep, wafer and mitochondria defocus series, pseudoscorpion) and rendered ones, with three
that go wrong on purpose: a truncated file, a single image, and a file with a damaged tag
(a warning). Writes docs/images/batch-report.png; the report itself stays in WORK_FOLDER.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile
from skimage.transform import downscale_local_mean

from napari_pdmfuse.training import rendering as render

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PDMFUSE_DATA", ROOT.parent / "shared" / "data"))
SHOT = ROOT / "docs" / "images" / "batch-report.png"
CROP = (120, 160)
MAX_BYTES = 500_000


def _offset(path: Path) -> float:
    """The focus offset a defocus series names its images by (``…_-5.34.tiff``)."""
    return float(path.stem.rsplit("_", 1)[1])


def planes(
    folder: str, pattern: str, every: int = 1, factor: int = 1, by_offset: bool = False
) -> np.ndarray:
    """The images of a real stack in order, every ``every``-th, reduced ``factor`` times."""
    files = sorted((DATA / folder).glob(pattern), key=_offset if by_offset else None)[::every]
    stack = []
    for file in files:
        image = iio.imread(file).astype(np.float32)
        block = (factor, factor, 1)[: image.ndim]
        stack.append(downscale_local_mean(image, block) if factor > 1 else image)
    return np.stack(stack)


def sources() -> dict[str, tuple[np.ndarray, float | None]]:
    """Each real stack, reduced to a few hundred pixels, with its Z step in µm if known."""
    mito = "mitochondria-defocus-fluorescence"
    return {
        "diatom": (planes("diatom-brightfield", "[123].jpg"), None),
        "keyboard": (planes("keyboard-focal-sweep", "a*.jpg", every=4, factor=2), None),
        "wafer": (planes("wafer-defocus-reflected", "*.tiff", factor=6, by_offset=True), None),
        "mitochondria": (planes(mito, "*.tif"), 0.15),
        "pseudoscorpion": (planes("pseudoscorpion-rpi", "*.jpg", every=2, factor=8), None),
    }


def save(path: Path, stack: np.ndarray, z_um: float | None, dtype: type) -> None:
    """An ImageJ stack of ``stack`` (Z, Y, X[, RGB]) with its Z step."""
    rgb = stack.ndim == 4
    scaled = stack if dtype is np.uint16 else np.clip(stack, 0, 255)
    metadata: dict[str, object] = {"axes": "ZYXS" if rgb else "ZYX"}
    if z_um is not None:
        metadata |= {"spacing": z_um, "unit": "um"}
    tifffile.imwrite(
        path,
        scaled.astype(dtype),
        imagej=True,
        metadata=metadata,
        photometric="rgb" if rgb else "minisblack",
    )


def make_stacks(folder: Path) -> list[Path]:
    rng = np.random.default_rng(7)
    real = sources()
    kinds = [*real, "rendered"]
    paths = []
    for k in range(100):
        kind = kinds[k % len(kinds)]
        path = folder / f"pos{k + 1:03d}_{kind}.tif"
        if kind == "rendered":
            drawn = render.random_stack(rng, CROP, n_slices=int(rng.integers(4, 12)))
            stack = drawn.stack.astype(np.float32) - drawn.stack.min()
            save(path, stack * (255 / max(float(stack.max()), 1.0)), 0.5, np.uint8)
        else:
            stack, z_um = real[kind]
            y = int(rng.integers(0, stack.shape[1] - CROP[0] + 1))
            x = int(rng.integers(0, stack.shape[2] - CROP[1] + 1))
            crop = stack[:, y : y + CROP[0], x : x + CROP[1]]
            save(path, crop, z_um, np.uint16 if kind == "mitochondria" else np.uint8)
        paths.append(path)
    _break(paths[3], paths[4], paths[8])
    return paths


def _break(truncated: Path, single: Path, damaged: Path) -> None:
    """Three stacks that go wrong: cut short, one image only, a damaged tag (a warning)."""
    blob = truncated.read_bytes()
    truncated.write_bytes(blob[: len(blob) // 3])
    tifffile.imwrite(single, tifffile.imread(single)[0])
    data = bytearray(damaged.read_bytes())
    with tifffile.TiffFile(damaged) as tif:
        tag = tif.pages.first.tags["Software"]
    data[tag.offset + 4 : tag.offset + 8] = struct.pack("<I", 2**31)  # count: far past the end
    damaged.write_bytes(bytes(data))


def main() -> None:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="report-"))
    stacks = work / "stacks"
    shutil.rmtree(stacks, ignore_errors=True)
    stacks.mkdir(parents=True)
    paths = make_stacks(stacks)
    out = work / "fused"
    report = out / "report.html"
    command = [sys.executable, "-m", "napari_pdmfuse", "batch", *map(str, paths)]
    command += ["--out-dir", str(out), "--method", "wavelet", "--report", str(report)]
    command += ["--focus-map", "--overwrite", "--quiet"]
    subprocess.run(command, check=False)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("Chromium is needed for the screenshot: apt-get install chromium")
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--hide-scrollbars",
            f"--screenshot={SHOT}",
            "--window-size=1280,1180",
            report.as_uri(),
        ],
        check=True,
        capture_output=True,
    )
    if SHOT.stat().st_size > MAX_BYTES:
        from PIL import Image

        image = Image.open(SHOT).convert("RGB")
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(SHOT, optimize=True)
    print(f"wrote {SHOT} from {report}", file=sys.stderr)


if __name__ == "__main__":
    main()
