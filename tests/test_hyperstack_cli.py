"""Hyperstack files end to end: read with every axis, fused from the command line, written back
with their time and channel axes, pixel size and channel names; alignment and physical units."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_pdmfuse import InputError, fuse
from napari_pdmfuse.cli import main
from napari_pdmfuse.reading import open_image as read_hyperstack
from napari_pdmfuse.training.rendering import demo_stack

NAMES = ["DAPI", "GFP"]
PIXEL = 0.25  # µm
Z_STEP = 1.5  # µm


@pytest.fixture(scope="module")
def zcyx() -> np.ndarray:
    """(Z, C, Y, X) uint16: a rendered stack, and the same stack at twice the intensity."""
    grey = demo_stack(5, 96, seed=1).stack // 2
    return np.stack([grey, grey * 2], axis=1)


def run(capsys, *args: object) -> tuple[int, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert captured.out == ""
    return code, captured.err


def write_ome(path: Path, data: np.ndarray, axes: str, **extra: object) -> Path:
    metadata = {
        "axes": axes,
        "PhysicalSizeX": PIXEL,
        "PhysicalSizeY": PIXEL,
        "PhysicalSizeZ": Z_STEP,
        **extra,
    }
    tifffile.imwrite(path, data, ome=True, photometric="minisblack", metadata=metadata)
    return path


def write_imagej(
    path: Path, data: np.ndarray, axes: str, names: list[str] | None = None, **extra: object
) -> Path:
    metadata: dict[str, object] = {"axes": axes, "unit": "um", "spacing": Z_STEP, **extra}
    if names is not None:  # ImageJ keeps channel names as slice labels (C varies fastest)
        pages = int(np.prod([n for a, n in zip(axes, data.shape, strict=True) if a not in "YX"]))
        metadata["Labels"] = [names[i % len(names)] for i in range(pages)]
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / PIXEL, 1 / PIXEL), metadata=metadata)
    return path


def described(path: Path) -> tuple[str, list[str] | None, tuple[float, float] | None]:
    """Axes, channel names and (y, x) pixel size (µm) as another program would read them."""
    with tifffile.TiffFile(path) as tif:
        axes = tif.series[0].axes
        if tif.is_ome:
            pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
            channels = pixels.get("Channel")
            channels = channels if isinstance(channels, list) else [channels]
            names = [c["Name"] for c in channels if c and "Name" in c] or None
            size = (pixels["PhysicalSizeY"], pixels["PhysicalSizeX"])
            assert pixels["PhysicalSizeXUnit"] == "µm"
            return axes, names, size
        assert tif.is_imagej
        meta = tif.imagej_metadata
        labels = meta.get("Labels")
        n = tif.series[0].shape[axes.index("C")] if "C" in axes else 0
        names = list(labels[:n]) if labels and n else None
        assert meta["unit"] in ("um", "micron", "µm")
        x = tif.pages.first.tags["XResolution"].value
        y = tif.pages.first.tags["YResolution"].value
        return axes, names, (y[1] / y[0], x[1] / x[0])


# ---------------------------------------------------------------------------------------------
# Reading


@pytest.mark.parametrize("kind", ["ome-ZCYX", "ome-CZYX", "imagej-ZCYX"])
def test_read_hyperstack_keeps_channels_names_and_scale(tmp_path, zcyx, kind):
    fmt, axes = kind.split("-")
    data = zcyx if axes == "ZCYX" else np.ascontiguousarray(zcyx.transpose(1, 0, 2, 3))
    if fmt == "ome":
        path = write_ome(tmp_path / "s.ome.tif", data, axes, Channel={"Name": NAMES})
    else:
        path = write_imagej(tmp_path / "s.tif", data, axes, NAMES)
    hyper = read_hyperstack([path])
    assert hyper.axes == axes and hyper.data.shape == data.shape
    assert hyper.channel_names == tuple(NAMES)
    assert hyper.pixel_size == pytest.approx((PIXEL, PIXEL)) and hyper.unit == "um"
    assert hyper.z_spacing == pytest.approx(Z_STEP)
    np.testing.assert_array_equal(np.asarray(hyper.data), data)


def test_read_hyperstack_axes_override_and_unknown_axes(tmp_path):
    path = tmp_path / "shaped.tif"
    tifffile.imwrite(path, np.zeros((2, 3, 8, 8), np.uint8), photometric="minisblack")
    with pytest.raises(InputError, match="cannot tell which is time"):
        read_hyperstack([path])
    assert read_hyperstack([path], axes="tzyx").axes == "TZYX"
    # Axes of length one may be named too, although the file's own reading drops them.
    single = tmp_path / "t1.tif"
    tifffile.imwrite(
        single, np.zeros((1, 3, 8, 8), np.uint8), imagej=True, metadata={"axes": "TZYX"}
    )
    assert read_hyperstack([single]).axes == "ZYX"
    hyper = read_hyperstack([single], axes="TZYX")
    assert hyper.axes == "TZYX" and hyper.data.shape == (1, 3, 8, 8)
    with pytest.raises(InputError, match="name 2 axes but"):
        read_hyperstack([single], axes="YX")


# ---------------------------------------------------------------------------------------------
# Command line round trips


@pytest.mark.parametrize("kind", ["ome-ZCYX", "ome-CZYX", "imagej-ZCYX"])
def test_two_channels_round_trip(tmp_path, capsys, zcyx, kind):
    fmt, axes = kind.split("-")
    data = zcyx if axes == "ZCYX" else np.ascontiguousarray(zcyx.transpose(1, 0, 2, 3))
    suffix = ".ome.tif" if fmt == "ome" else ".tif"
    if fmt == "ome":
        path = write_ome(tmp_path / f"in{suffix}", data, axes, Channel={"Name": NAMES})
    else:
        path = write_imagej(tmp_path / f"in{suffix}", data, axes, NAMES)
    out, focus = tmp_path / f"fused{suffix}", tmp_path / f"focus{suffix}"

    code, err = run(capsys, "fuse", path, "-o", out, "--focus-map", focus, "--method", "wavelet")

    assert code == 0, err
    assert "fused 5 planes of 96×96 (2 channels) with wavelet" in err
    assert described(out) == ("CYX", NAMES, pytest.approx((PIXEL, PIXEL)))
    fused = tifffile.imread(out)
    assert fused.shape == (2, 96, 96) and fused.dtype == np.uint16
    # The channels share one focus map: a 2-D map, and twice the input gives twice the output.
    focus_map = tifffile.imread(focus)
    assert focus_map.shape == (96, 96) and focus_map.dtype == np.float32
    assert np.abs(fused[1].astype(int) - 2 * fused[0].astype(int)).max() <= 1
    core = fuse(zcyx.transpose(0, 2, 3, 1), channel_axis=3, method="wavelet")
    np.testing.assert_array_equal(focus_map, core.focus_map)
    np.testing.assert_array_equal(fused, np.moveaxis(core.fused, -1, 0))


def test_separate_channels_and_focus_channel(tmp_path, capsys, zcyx):
    path = write_ome(tmp_path / "in.ome.tif", zcyx, "ZCYX", Channel={"Name": NAMES})
    out, focus = tmp_path / "f.ome.tif", tmp_path / "m.ome.tif"
    code, err = run(
        capsys, "fuse", path, "-o", out, "--focus-map", focus, "--method", "wavelet",
        "--channel-mode", "separate", "-q",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert described(focus) == ("CYX", NAMES, pytest.approx((PIXEL, PIXEL)))
    maps = tifffile.imread(focus)
    for c in range(2):
        np.testing.assert_array_equal(maps[c], fuse(zcyx[:, c], method="wavelet").focus_map)

    code, err = run(
        capsys, "fuse", path, "-o", tmp_path / "g.tif", "--focus-map", tmp_path / "n.tif",
        "--method", "wavelet", "--focus-channel", "1", "-q",
    )  # fmt: skip
    assert (code, err) == (0, "")
    expected = fuse(zcyx[:, 1], method="wavelet").focus_map
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "n.tif"), expected)


def test_time_lapse_round_trip_keeps_t(tmp_path, capsys):
    stacks = [demo_stack(4, 64, seed=s).stack for s in (2, 3)]
    data = np.stack(stacks)  # (T, Z, Y, X)
    path = write_imagej(tmp_path / "lapse.tif", data, "TZYX", finterval=2.5)
    out, focus, conf = (tmp_path / n for n in ("fused.tif", "focus.tif", "conf.tif"))

    code, err = run(
        capsys, "fuse", path, "-o", out, "--focus-map", focus, "--confidence", conf,
        "--method", "wavelet",
    )  # fmt: skip

    assert code == 0, err
    assert "fused 2 time points × 4 planes of 64×64 with wavelet" in err
    assert re.search(r"\b2/2\b", err)  # the progress bar counts tiles over all time points
    for path_, dtype in ((out, np.uint16), (focus, np.float32), (conf, np.float32)):
        axes, _, size = described(path_)
        assert axes == "TYX" and size == pytest.approx((PIXEL, PIXEL))
        assert tifffile.imread(path_).dtype == dtype
        with tifffile.TiffFile(path_) as tif:  # the time between frames is kept
            assert tif.imagej_metadata["finterval"] == 2.5
    fused, focus_map = tifffile.imread(out), tifffile.imread(focus)
    assert fused.shape == focus_map.shape == (2, 64, 64)
    for t in range(2):
        alone = fuse(data[t], method="wavelet")
        np.testing.assert_array_equal(fused[t], alone.fused)
        np.testing.assert_array_equal(focus_map[t], alone.focus_map)


def test_ome_time_increment_is_kept_in_seconds(tmp_path, capsys):
    data = np.stack([demo_stack(3, 64, seed=s).stack for s in (2, 3)])  # (T, Z, Y, X)
    path = write_ome(tmp_path / "lapse.ome.tif", data, "TZYX", TimeIncrement=1.5,
                     TimeIncrementUnit="min")  # fmt: skip
    assert read_hyperstack([path]).time_interval == 90.0
    out = tmp_path / "fused.ome.tif"
    code, err = run(capsys, "fuse", path, "-o", out, "--method", "argmax", "-q")
    assert code == 0, err
    with tifffile.TiffFile(out) as tif:
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
    assert pixels["TimeIncrement"] == 90.0 and pixels["TimeIncrementUnit"] == "s"
    # an OME-TIFF whose pixel size is only in the resolution tags keeps both
    bare = tmp_path / "bare.ome.tif"
    tifffile.imwrite(bare, data, ome=True, resolution=(4, 4), resolutionunit="MICROMETER",
                     metadata={"axes": "TZYX", "TimeIncrement": 2.0})  # fmt: skip
    hyper = read_hyperstack([bare])
    assert hyper.pixel_size == (0.25, 0.25) and hyper.time_interval == 2.0


def test_axes_option_names_an_unlabelled_file(tmp_path, capsys):
    data = np.stack([demo_stack(3, 64, seed=s).stack for s in (4, 5)])
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, data, photometric="minisblack")  # no axis labels: "QQYX"
    args = ("fuse", path, "-o", tmp_path / "f.tif", "--method", "argmax", "-q")
    code, err = run(capsys, *args)
    assert code == 2 and "cannot tell which is time" in err and "--axes" in err
    code, err = run(capsys, *args, "--axes", "tzyx")
    assert (code, err) == (0, "")
    assert tifffile.imread(tmp_path / "f.tif").shape == (2, 64, 64)


# ---------------------------------------------------------------------------------------------
# Alignment


MARGIN, SIZE = 12, 128
#: Where each plane's window starts in the larger rendered field: a drifting stage.
OFFSETS = [(0, 9), (3, 5), (6, 6), (8, 2), (11, 0)]


def drifting_stack() -> np.ndarray:
    field = demo_stack(len(OFFSETS), SIZE + MARGIN, seed=6).stack
    windows = zip(field, OFFSETS, strict=True)
    return np.stack([plane[oy : oy + SIZE, ox : ox + SIZE] for plane, (oy, ox) in windows])


def test_align_similarity_reports_transforms_and_coverage(tmp_path, capsys):
    path = write_imagej(tmp_path / "drift.tif", drifting_stack(), "ZYX")
    out, cover = tmp_path / "fused.tif", tmp_path / "coverage.tif"

    code, err = run(
        capsys, "fuse", path, "-o", out, "--coverage", cover, "--method", "wavelet",
        "--align", "similarity",
    )  # fmt: skip

    assert code == 0, err
    assert "pdmfuse: alignment (similarity): every plane covers" in err
    rows = re.findall(r"^\s*(\d+)\s+([-+]\d+\.\d+)\s+([-+]\d+\.\d+)\s+(\d\.\d+)$", err, re.M)
    assert [int(r[0]) for r in rows] == list(range(len(OFFSETS)))
    ref = OFFSETS[len(OFFSETS) // 2]
    for (_, dy, dx, scale), (oy, ox) in zip(rows, OFFSETS, strict=True):
        # A feature at p in the middle plane lies at p + (ref - offset) in this one.
        assert float(dy) == pytest.approx(ref[0] - oy, abs=0.3)
        assert float(dx) == pytest.approx(ref[1] - ox, abs=0.3)
        assert float(scale) == pytest.approx(1.0, abs=0.005)
    mask = tifffile.imread(cover)
    assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 255}
    span_y, span_x = (max(o[i] for o in OFFSETS) - min(o[i] for o in OFFSETS) for i in (0, 1))
    expected = (SIZE - span_y) * (SIZE - span_x) / SIZE**2
    fraction = float(re.search(r"covers (\d+\.\d) %", err).group(1)) / 100
    assert fraction == pytest.approx((mask == 255).mean(), abs=0.001)
    assert fraction == pytest.approx(expected, abs=0.03)
    assert tifffile.imread(out).shape == (SIZE, SIZE)


def test_batch_keeps_time_and_writes_coverage(tmp_path, capsys):
    data = np.stack([drifting_stack(), drifting_stack()])
    path = write_imagej(tmp_path / "lapse.tif", data, "TZYX")
    out = tmp_path / "out"
    code, err = run(
        capsys, "batch", path, "--out-dir", out, "--method", "argmax", "--align", "translation",
        "--coverage", "-q",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert sorted(p.name for p in out.iterdir()) == ["lapse_coverage.tif", "lapse_fused.tif"]
    assert tifffile.imread(out / "lapse_coverage.tif").shape == (2, SIZE, SIZE)
    assert described(out / "lapse_fused.tif")[0] == "TYX"


# ---------------------------------------------------------------------------------------------
# Physical units


def test_focus_units_um_scale_the_map(tmp_path, capsys):
    data = demo_stack(4, 64, seed=7).stack
    path = write_imagej(tmp_path / "z.tif", data, "ZYX")  # Z step 1.5 µm
    slices, um = tmp_path / "slices.tif", tmp_path / "um.tif"
    base = ("fuse", path, "--method", "wavelet", "-q")
    assert run(capsys, *base, "-o", tmp_path / "a.tif", "--focus-map", slices) == (0, "")
    code, err = run(
        capsys, *base, "-o", tmp_path / "b.tif", "--focus-map", um, "--focus-units", "um"
    )
    assert (code, err) == (0, "")
    np.testing.assert_allclose(tifffile.imread(um), Z_STEP * tifffile.imread(slices), rtol=1e-6)

    # The hyperstack path (here: alignment) scales the map the same way, by --z-spacing.
    code, err = run(
        capsys, *base, "-o", tmp_path / "c.tif", "--focus-map", tmp_path / "h.tif",
        "--z-spacing", "0.5", "--align", "translation",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert tifffile.imread(tmp_path / "h.tif").max() <= 0.5 * 3 + 1e-5


def test_focus_units_um_without_a_z_step_is_one_sentence(tmp_path, capsys):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, demo_stack(3, 64, seed=8).stack, photometric="minisblack")
    out = tmp_path / "f.tif"
    code, err = run(capsys, "fuse", path, "-o", out, "--focus-units", "um", "--method", "argmax")
    assert code == 2 and err.count("\n") == 1
    assert err == (
        f"pdmfuse: error: {path} records no Z step in micrometres, so the focus map cannot be "
        "given in µm; pass the step with --z-spacing UM.\n"
    )
    assert not out.exists()
    code, err = run(
        capsys, "fuse", path, "-o", out, "--focus-map", tmp_path / "m.tif", "--focus-units",
        "um", "--z-spacing", "2", "--method", "argmax", "-q",
    )  # fmt: skip
    assert (code, err) == (0, "")
    expected = fuse(tifffile.imread(path), method="argmax", z_spacing=2.0).focus_map
    np.testing.assert_allclose(tifffile.imread(tmp_path / "m.tif"), expected)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--coverage", "c.tif"], "needs --align"),
        (["--focus-units", "slices", "--z-spacing", "1"], "drop one of them"),
        (["--channel-mode", "separate", "--focus-channel", "0"], "combined channel mode only"),
        (["--focus-channel", "2"], "channels 0 to 1"),
        (["--axes", "ZYX"], "name 3 axes but"),
    ],
)
def test_bad_options_are_one_sentence_and_write_nothing(tmp_path, capsys, zcyx, extra, words):
    path = write_ome(tmp_path / "in.ome.tif", zcyx, "ZCYX")
    before = sorted(p.name for p in tmp_path.iterdir())
    extra = [str(tmp_path / e) if e.endswith(".tif") else e for e in extra]
    code, err = run(capsys, "fuse", path, "-o", tmp_path / "f.tif", "--method", "argmax", *extra)
    assert code == 2 and err.count("\n") == 1 and words in err, err
    assert err.startswith("pdmfuse: error: ") and err.rstrip().endswith(".")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
