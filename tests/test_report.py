"""``pdmfuse batch --report``: a self-contained HTML page and a CSV with a row per stack, and
the samples they are made from."""

from __future__ import annotations

import base64
import csv
import re
import struct
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_pdmfuse import FuseOptions, Outputs, fuse_files
from napari_pdmfuse.cli import main
from napari_pdmfuse.overview import LOW_CONFIDENCE, SAMPLES


def stack(seed: int, shape=(5, 40, 52)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, shape, dtype=np.uint16)


@pytest.fixture
def inputs(tmp_path) -> list[Path]:
    """A stack with a Z step, an RGB one whose TIFF tags are damaged (a warning), a bad one."""
    folder = tmp_path / "in"
    folder.mkdir()
    good = folder / "cells.tif"
    tifffile.imwrite(
        good, stack(0), imagej=True, metadata={"axes": "ZYX", "spacing": 0.5, "unit": "um"}
    )
    rgb = folder / "colour.tif"
    data = (np.random.default_rng(1).random((4, 30, 36, 3)) * 255).astype(np.uint8)
    tifffile.imwrite(rgb, data, photometric="rgb")
    blob = bytearray(rgb.read_bytes())
    with tifffile.TiffFile(rgb) as tif:
        tag = tif.pages.first.tags["Software"]
    blob[tag.offset + 4 : tag.offset + 8] = struct.pack("<I", 2**31)
    rgb.write_bytes(bytes(blob))
    bad = folder / "notes.tif"
    bad.write_text("not an image\n")
    return [good, rgb, bad]


def batch(capsys, inputs, out: Path, report: Path, *extra: str) -> tuple[int, str]:
    args = ["batch", *map(str, inputs), "--out-dir", str(out), "--method", "argmax"]
    code = main([*args, "--report", str(report), "-q", *extra])
    return code, capsys.readouterr().err


def rows(report: Path) -> list[dict[str, str]]:
    with report.with_suffix(".csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_report_has_a_row_per_stack_with_thumbnails(tmp_path, capsys, inputs):
    report = tmp_path / "out" / "report.html"  # in the folder the batch creates
    code, _ = batch(capsys, inputs, tmp_path / "out", report)
    assert code == 2

    page = report.read_text()
    # Self-contained: no address to fetch, no script; every image a PNG data URI.
    assert not re.search(r"(src|href)=\"(?!data:)", page) and "<script" not in page
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4  # fused image and focus map of the two stacks fused
    thumbs = [iio.imread(base64.b64decode(i)) for i in images]
    assert thumbs[0].shape == (40, 52, 3) and thumbs[0].dtype == np.uint8
    assert thumbs[2].shape == (30, 36, 3)
    assert all(t.std() > 0 for t in thumbs)  # not blank
    assert page.count('<tr class="fused">') == 2 and page.count('<tr class="failed">') == 1

    cells, colour, notes = rows(report)
    assert (cells["status"], colour["status"], notes["status"]) == ("fused", "fused", "failed")
    assert cells["planes"] == "5" and cells["output"] == str(tmp_path / "out" / "cells_fused.tif")
    low, high = float(cells["focus_low_planes"]), float(cells["focus_high_planes"])
    assert 0 <= low <= high <= 4
    assert float(cells["focus_high_um"]) == pytest.approx(high * 0.5, abs=1e-3)
    assert colour["focus_low_um"] == ""  # no Z step known
    assert 0 <= float(cells["low_confidence_share"]) <= 1
    assert float(cells["input_mb"]) == pytest.approx(5 * 40 * 52 * 2 / 1e6, abs=1e-3)
    assert float(cells["seconds"]) > 0 and float(cells["mb_per_s"]) > 0
    assert "damaged TIFF tags" in colour["warnings"] and cells["warnings"] == ""
    assert notes["error"].startswith(f"{inputs[2]} is not a readable image")
    assert notes["error"] in page  # the failure's sentence on the page too


def test_a_rerun_reports_kept_stacks_and_replaces_its_report(tmp_path, capsys, inputs):
    out, report = tmp_path / "out", tmp_path / "report.html"
    batch(capsys, inputs[:1], out, report, "--focus-map", "--confidence")
    first = rows(report)[0]

    assert batch(capsys, inputs[:1], out, report, "--focus-map", "--confidence")[0] == 0
    (kept,) = rows(report)
    assert kept["status"] == "kept" and kept["seconds"] == ""
    assert report.read_text().count("data:image/png") == 2
    # Read back from the outputs: the same samples, so the same figures.
    for column in ("focus_low_planes", "focus_high_planes", "low_confidence_share"):
        assert float(kept[column]) == pytest.approx(float(first[column]), abs=0.02)


def test_a_report_never_replaces_another_file(tmp_path, capsys, inputs):
    report = tmp_path / "summary.html"
    report.write_text("<html>someone's notes</html>")
    code, err = batch(capsys, inputs[:1], tmp_path / "out", report)
    assert code == 2 and err == (
        f"pdmfuse: error: The report {report} already exists and is not a pdmfuse report; "
        "choose another name or allow overwriting (--overwrite).\n"
    )
    assert not (tmp_path / "out").exists()  # refused before any work
    code, err = batch(capsys, inputs[:1], tmp_path / "out", tmp_path / "report.txt")
    assert code == 2 and "is not named .html" in err


def test_samples_are_the_outputs_pixels(tmp_path):
    """Tiles of any size and offset give the outputs' every step-th pixel, and the share of
    low confidence is exact."""
    source = tmp_path / "wide.tif"
    data = stack(2, (4, 230, 500))
    tifffile.imwrite(source, data, imagej=True, metadata={"axes": "ZYX"})
    outputs = Outputs(tmp_path / "f.tif", tmp_path / "m.tif", tmp_path / "c.tif")
    written = fuse_files(source, outputs, FuseOptions(method="argmax", tile=70), overview=True)

    view = written.overview
    step = -(-500 // SAMPLES)
    fused, confidence = tifffile.imread(outputs.fused), tifffile.imread(outputs.confidence)
    np.testing.assert_array_equal(view.fused[..., 0], fused[::step, ::step])
    np.testing.assert_array_equal(view.focus, tifffile.imread(outputs.focus_map)[::step, ::step])
    np.testing.assert_array_equal(view.confidence, confidence[::step, ::step])
    assert view.low_confidence == pytest.approx((confidence < LOW_CONFIDENCE).mean())
    assert view.input_bytes == data.nbytes and view.n_planes == 4
