"""Every job kind streams into every output format, equal to the in-memory fusion.

A job kind is what the stack holds (grey, RGB, channels fused together or apart, a focus
channel, time points, drifting planes); each is written with ``fuse_files`` tile by tile into
a plain TIFF (ImageJ hyperstack), a tiled OME-TIFF and an OME-Zarr store, read back with
tifffile and zarr, and compared with ``fuse(..., axes=...)`` of the same array, axes and
metadata included.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from napari_pdmfuse import FuseOptions, fuse
from napari_pdmfuse.files import Outputs, fuse_files
from napari_pdmfuse.training.rendering import demo_stack

FORMATS = (".tif", ".ome.tif", ".ome.zarr")
PIXEL = (0.25, 0.5)  # (y, x) µm


def _grey(n_planes: int = 3, size: int = 72, seed: int = 0) -> np.ndarray:
    return demo_stack(n_planes, size, seed=seed).stack  # uint16


def _drifting(size: int = 96) -> np.ndarray:
    stack = _grey(3, size + 8, seed=3)
    return np.stack([stack[k, k : k + size, 2 * k : 2 * k + size] for k in range(3)])


def _kinds() -> dict[str, tuple[np.ndarray, str, dict]]:
    grey = _grey()
    rgb = demo_stack(3, 72, seed=1, rgb=True, bits=8).stack
    two = np.stack([grey, grey[:, ::-1] // 2], axis=1)  # Z C Y X
    return {
        "grey": (grey, "ZYX", {}),
        "rgb": (rgb, "ZYXS", {}),
        "combined": (two, "ZCYX", {}),
        "separate": (two, "ZCYX", {"channel_mode": "separate"}),
        "focus-channel": (two, "ZCYX", {"focus_channel": 1}),
        "time-lapse": (np.stack([grey, grey[:, :, ::-1]]), "TZYX", {}),
        "aligned": (_drifting(), "ZYX", {"align": "translation"}),
    }


KINDS = _kinds()


def _write_input(path, data: np.ndarray, axes: str) -> None:
    metadata = {"axes": axes, "PhysicalSizeY": PIXEL[0], "PhysicalSizeX": PIXEL[1]}
    metadata |= {"PhysicalSizeYUnit": "µm", "PhysicalSizeXUnit": "µm", "Name": "specimen"}
    if "C" in axes:
        metadata["Channel"] = {"Name": ["DAPI", "GFP"]}
    tifffile.imwrite(
        path, data, ome=True, photometric="rgb" if "S" in axes else None, metadata=metadata
    )


def _read(path) -> tuple[np.ndarray, str]:
    """An output's full-resolution pixels and axes, as tifffile or zarr give them."""
    if path.name.endswith(".zarr"):
        group = zarr.open_group(str(path), mode="r")
        image = group.attrs["ome"]["multiscales"][0]
        axes = "".join(a["name"] for a in image["axes"]).upper()
        return np.asarray(group[image["datasets"][0]["path"]]), axes
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        return series.asarray(), series.axes.replace("Q", "").upper()


def _canonical(data: np.ndarray, axes: str, want: str) -> np.ndarray:
    """``data`` with axes ``axes`` brought to ``want``; an RGB image stored with its samples
    as channels (OME-Zarr has no sample axis) compares as S."""
    if "S" in want and "S" not in axes:
        axes = axes.replace("C", "S")
    kept = [i for i, a in enumerate(axes) if a in want]
    drop = tuple(i for i, a in enumerate(axes) if a not in want)
    data = data.squeeze(drop) if drop else data
    letters = "".join(axes[i] for i in kept)
    return data.transpose([letters.index(a) for a in want])


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_job_kind_streams_into_every_format(tmp_path, kind, suffix):
    data, axes, extra = KINDS[kind]
    source = tmp_path / "stack.ome.tif"
    _write_input(source, data, axes)
    options = FuseOptions(method="argmax", tile=32, **extra)
    names = {k: tmp_path / f"{k}{suffix}" for k in ("fused", "focus_map", "confidence")}
    if "align" in extra:
        names["coverage"] = tmp_path / f"coverage{suffix}"
    written = fuse_files(source, Outputs(**names), options)
    assert sorted(written.paths) == sorted(names.values())

    expected = fuse(data, axes=axes, options=options)
    got, got_axes = _read(names["fused"])
    assert got.dtype == data.dtype
    np.testing.assert_array_equal(_canonical(got, got_axes, expected.axes), expected.fused)
    for kind_name, want in (("focus_map", expected.focus_map), ("confidence", expected.confidence)):
        got, got_axes = _read(names[kind_name])
        assert got.dtype == np.float32
        np.testing.assert_array_equal(_canonical(got, got_axes, expected.map_axes), want)
    if "coverage" in names:
        got, got_axes = _read(names["coverage"])
        want = expected.coverage.astype(np.uint8) * 255
        np.testing.assert_array_equal(_canonical(got, got_axes, "YX"), want)


@pytest.mark.parametrize("suffix", FORMATS)
def test_outputs_keep_channel_names_pixel_size_and_name(tmp_path, suffix):
    data, axes, _ = KINDS["separate"]
    source = tmp_path / "stack.ome.tif"
    _write_input(source, data, axes)
    fused, focus = tmp_path / f"fused{suffix}", tmp_path / f"focus{suffix}"
    options = FuseOptions(method="argmax", channel_mode="separate", z_spacing=0.5)
    fuse_files(source, Outputs(fused, focus_map=focus), options)
    for path in (fused, focus):
        if suffix == ".ome.zarr":
            attrs = zarr.open_group(str(path), mode="r").attrs["ome"]
            labels = [c["label"] for c in attrs["omero"]["channels"]]
            scale = attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]
            assert labels == ["DAPI", "GFP"]
            assert scale["scale"][-2:] == list(PIXEL)
            assert attrs["multiscales"][0]["name"] == "specimen"
        else:
            with tifffile.TiffFile(path) as tif:
                text = tif.ome_metadata or str(tif.imagej_metadata)
            assert "DAPI" in text and "GFP" in text and "specimen" in text
    got, _ = _read(focus)
    # Separate channels: one map per channel, in micrometres (3 planes: at most 2 steps).
    assert got.shape[-3] == 2 and got.min() >= 0 and got.max() <= 1.0 + 1e-6


def test_separate_channels_are_aligned_on_all_channels_together():
    """Each channel fused on its own still moves with the transforms found on all channels
    (a dim first channel must not decide the alignment alone)."""
    drift = _drifting()
    two = np.stack([drift // 64, drift], axis=1)  # Z C Y X: channel 0 nearly empty
    options = {"method": "argmax", "align": "translation"}
    separate = fuse(two, axes="ZCYX", channel_mode="separate", **options)
    combined = fuse(two, axes="ZCYX", **options)
    assert separate.transforms == combined.transforms
    np.testing.assert_array_equal(separate.coverage, combined.coverage)
