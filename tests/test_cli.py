"""The ``pdmfuse`` command end to end: round trips, help, and refusals that write nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_pdmfuse import fusion, render
from napari_pdmfuse.cli import main

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OPTIONS = (
    "--output",
    "--focus-map",
    "--confidence",
    "--method",
    "--device",
    "--tile",
    "--overwrite",
    "--quiet",
)


def stack_of(dtype: type, rgb: bool = False, n: int = 5) -> np.ndarray:
    """A small rendered focus stack rescaled to ``dtype``, deterministic."""
    planes = render.random_stack(np.random.default_rng(1), (64, 80), n_slices=n, rgb=rgb).stack
    scaled = planes.astype(np.float64) / max(int(planes.max()), 1) * np.iinfo(dtype).max
    return scaled.astype(dtype)


def run(capsys, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check_maps(focus_path: Path, confidence_path: Path, shape: tuple[int, int], n: int) -> None:
    focus = tifffile.imread(focus_path)
    confidence = tifffile.imread(confidence_path)
    assert focus.dtype == confidence.dtype == np.float32
    assert focus.shape == confidence.shape == shape
    assert focus.min() >= 0 and focus.max() <= n - 1
    assert confidence.min() >= 0 and confidence.max() <= 1


# ---------------------------------------------------------------------------------------------
# Round trips


def test_grey_uint16_tiff_round_trip(tmp_path, capsys):
    data = stack_of(np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", data, imagej=True, metadata={"axes": "ZYX"})
    out, focus, conf = (tmp_path / n for n in ("fused.tif", "focus.tif", "conf.tif"))

    code, stdout, stderr = run(
        capsys, "fuse", tmp_path / "stack.tif", "-o", out, "--focus-map", focus,
        "--confidence", conf, "--method", "argmax", "--tile", 32,
    )  # fmt: skip

    assert code == 0 and stdout == ""
    assert "6/6" in stderr and "fused 5 planes of 64×80 with argmax" in stderr
    fused = tifffile.imread(out)
    assert fused.dtype == np.uint16 and fused.shape == (64, 80)
    check_maps(focus, conf, (64, 80), 5)


def test_rgb_uint8_tiff_round_trip(tmp_path, capsys):
    data = stack_of(np.uint8, rgb=True, n=4)
    tifffile.imwrite(tmp_path / "rgb.tif", data, photometric="rgb")
    out = tmp_path / "fused.tif"

    code, stdout, stderr = run(
        capsys, "fuse", tmp_path / "rgb.tif", "-o", out, "--method", "argmax", "-q"
    )

    assert (code, stdout, stderr) == (0, "", "")
    with tifffile.TiffFile(out) as tif:
        assert tif.pages.first.photometric == tifffile.PHOTOMETRIC.RGB
        fused = tif.asarray()
    assert fused.dtype == np.uint8 and fused.shape == (64, 80, 3)
    # argmax copies each pixel from one plane: every fused value occurs in the stack there.
    assert ((data == fused[None]).all(axis=-1)).any(axis=0).all()


@pytest.mark.parametrize(("suffix", "rgb"), [(".png", False), (".jpg", True)])
def test_folder_of_planes(tmp_path, capsys, suffix, rgb):
    dtype = np.uint16 if suffix == ".png" else np.uint8
    data = stack_of(dtype, rgb=rgb, n=3)
    folder = tmp_path / "planes"
    folder.mkdir()
    for k, plane in enumerate(data):
        iio.imwrite(folder / f"z{k}{suffix}", plane)
    out, focus, conf = (tmp_path / n for n in ("fused.tif", "focus.tif", "conf.tif"))

    code, _, _ = run(
        capsys, "fuse", folder, "-o", out, "--focus-map", focus, "--confidence", conf,
        "--method", "wavelet", "--quiet",
    )  # fmt: skip

    assert code == 0
    fused = tifffile.imread(out)
    assert fused.dtype == dtype and fused.shape == data.shape[1:]
    check_maps(focus, conf, (64, 80), 3)


def test_list_of_plane_files(tmp_path, capsys):
    data = stack_of(np.uint8, n=3)
    planes = []
    for k, plane in enumerate(data):
        planes.append(tmp_path / f"plane{k}.tif")
        tifffile.imwrite(planes[-1], plane)
    out, focus, conf = (tmp_path / n for n in ("fused.tif", "focus.tif", "conf.tif"))

    code, _, stderr = run(
        capsys, "fuse", *planes, "-o", out, "--focus-map", focus, "--confidence", conf,
        "--method", "argmax", "-q",
    )  # fmt: skip

    assert code == 0 and stderr == ""
    fused = tifffile.imread(out)
    assert fused.dtype == np.uint8 and fused.shape == (64, 80)
    check_maps(focus, conf, (64, 80), 3)


@pytest.mark.skipif(not (SHARED_DATA / "diatom-brightfield").is_dir(), reason="no shared data")
def test_real_diatom_jpegs(tmp_path, capsys):
    # Diatom planes: BSD-3-Clause, MFusionJ project (github.com/gcristobal/MFusionJ, images/);
    # Singh et al., SPIE 12998, 129980Q (2024).
    planes = [SHARED_DATA / "diatom-brightfield" / f"{k}.jpg" for k in (1, 2, 3)]
    out, focus, conf = (tmp_path / n for n in ("fused.tif", "focus.tif", "conf.tif"))

    code, _, stderr = run(
        capsys, "fuse", *planes, "-o", out, "--focus-map", focus, "--confidence", conf,
        "--method", "wavelet", "-q",
    )  # fmt: skip

    assert code == 0, stderr
    fused = tifffile.imread(out)
    assert fused.dtype == np.uint8 and fused.shape == (229, 305, 3)
    check_maps(focus, conf, (229, 305), 3)
    assert fused.std() > 10  # an image, not a flat field


# ---------------------------------------------------------------------------------------------
# Refusals: exit status 2, one line on stderr, nothing written


def _two_d(d: Path) -> list[Path]:
    tifffile.imwrite(d / "one.tif", np.zeros((16, 16), np.uint8))
    return [d / "one.tif"]


def _mismatched(d: Path) -> list[Path]:
    tifffile.imwrite(d / "a.tif", np.zeros((16, 16), np.uint8))
    tifffile.imwrite(d / "b.tif", np.zeros((16, 20), np.uint8))
    return [d / "a.tif", d / "b.tif"]


def _missing(d: Path) -> list[Path]:
    return [d / "nowhere.tif"]


def _text(d: Path) -> list[Path]:
    (d / "notes.tif").write_text("not an image\n")
    return [d / "notes.tif"]


def _same_as_output(d: Path) -> list[Path]:
    tifffile.imwrite(d / "fused.tif", stack_of(np.uint8, n=2), photometric="minisblack")
    return [d / "fused.tif"]


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (_two_d, "single 2-D image"),
        (_mismatched, "b.tif is 16×20"),
        (_missing, "does not exist"),
        (_text, "not a readable image"),
        (_same_as_output, "also an input"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, make, words):
    inputs = make(tmp_path)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}

    code, stdout, stderr = run(
        capsys, "fuse", *inputs, "-o", tmp_path / "fused.tif", "--focus-map",
        tmp_path / "map.tif", "--method", "argmax", "--overwrite",
    )  # fmt: skip

    assert code == 2 and stdout == ""
    assert stderr.startswith("pdmfuse: error: ") and stderr.count("\n") == 1
    assert words in stderr and "Traceback" not in stderr
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    assert after == before  # nothing written, nothing touched, no temporary file left


def test_existing_output_refused_then_overwritten(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "stack.tif", stack_of(np.uint8, n=3), photometric="minisblack")
    out = tmp_path / "fused.tif"
    out.write_bytes(b"an earlier result")
    mtime = out.stat().st_mtime_ns
    args = ("fuse", tmp_path / "stack.tif", "-o", out, "--method", "argmax", "-q")

    code, _, stderr = run(capsys, *args)
    assert code == 2 and "already exists" in stderr and "--overwrite" in stderr
    assert out.read_bytes() == b"an earlier result" and out.stat().st_mtime_ns == mtime

    code, _, stderr = run(capsys, *args, "--overwrite")
    assert code == 0 and stderr == ""
    assert tifffile.imread(out).shape == (64, 80)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fused.tif", "stack.tif"]


def test_existing_second_output_refused_before_fusing(tmp_path, capsys, monkeypatch):
    tifffile.imwrite(tmp_path / "stack.tif", stack_of(np.uint8, n=3), photometric="minisblack")
    (tmp_path / "map.tif").write_bytes(b"old map")

    def never(*args, **kwargs):
        raise AssertionError("fused although an output was refused")

    monkeypatch.setattr(fusion, "fuse_iter", never)
    code, _, stderr = run(
        capsys, "fuse", tmp_path / "stack.tif", "-o", tmp_path / "fused.tif",
        "--focus-map", tmp_path / "map.tif", "--method", "argmax",
    )  # fmt: skip
    assert code == 2 and "map.tif already exists" in stderr
    assert not (tmp_path / "fused.tif").exists()


def test_interrupt_writes_nothing(tmp_path, capsys, monkeypatch):
    tifffile.imwrite(tmp_path / "stack.tif", stack_of(np.uint8, n=3), photometric="minisblack")

    def interrupted(self, sink):
        yield fusion.Progress(0, 4)
        assert len(list(tmp_path.glob(".f.tif.pdmfuse-tmp-*"))) == 1  # streaming into a temp
        raise KeyboardInterrupt

    monkeypatch.setattr(fusion.FusionPlan, "run", interrupted)
    code, _, stderr = run(capsys, "fuse", tmp_path / "stack.tif", "-o", tmp_path / "f.tif")
    assert code == 130 and "interrupted" in stderr
    assert [p.name for p in tmp_path.iterdir()] == ["stack.tif"]


def test_usage_error_exits_2(tmp_path, capsys):
    code, _, stderr = run(capsys, "fuse", tmp_path / "x.tif", "--method", "magic", "-o", "f.tif")
    assert code == 2 and "'magic' is not a method; choose one of pdmnet" in stderr
    code, _, stderr = run(capsys, "fuse", tmp_path / "x.tif", "-o", "f.tif", "--tile", "0")
    assert code == 2 and "--tile" in stderr


# ---------------------------------------------------------------------------------------------
# Help


def test_help_explains_every_option(capsys):
    code, stdout, _ = run(capsys, "--help")
    assert code == 0 and "fuse" in stdout
    code, stdout, _ = run(capsys, "fuse", "--help")
    assert code == 0
    for option in OPTIONS:
        assert option in stdout
    assert "(default: pdmnet)" in stdout and "(default: auto)" in stdout


def test_python_dash_m(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-m", "napari_pdmfuse", "fuse", str(tmp_path / "none.tif"), "-o",
         str(tmp_path / "f.tif")],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"pdmfuse: error: Input {tmp_path / 'none.tif'} does not exist; check the path."
    ]
