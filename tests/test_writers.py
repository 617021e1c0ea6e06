"""Streamed outputs: every axes layout into every format, tile by tile, with its metadata."""

import os

import numpy as np
import pytest
import tifffile

from napari_pdmfuse.writing import OutputMeta, open_output
from napari_pdmfuse.writing.atomic import temp_name
from napari_pdmfuse.writing.tiff import tiff_options

FORMATS = [".ome.zarr", ".ome.tif", ".tif"]

CASES = {
    "YX": ((37, 50), np.uint16),
    "YXS": ((37, 50, 3), np.uint8),
    "CYX": ((2, 37, 50), np.uint16),
    "TYX": ((3, 37, 50), np.float32),
    "TCYX": ((2, 2, 37, 50), np.uint16),
}


def meta_for(axes):
    """Metadata as a job would give it: a focus map for the float case, channels named."""
    return OutputMeta(
        pixel_size=(0.5, 0.25),
        unit="um",
        time_interval=1.5 if "T" in axes else None,
        channel_names=("DAPI", "GFP") if "C" in axes else None,
        name="sample",
        values="focus position" if axes == "TYX" else None,
        value_unit="micrometer" if axes == "TYX" else None,
    )


def random(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.normal(10, 3, shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def stream(path, axes, data, meta):
    """Write ``data`` as the lead will: under a temporary name, 3 × 3 uneven tiles per plane in
    a shuffled order, then move it into place."""
    lead_axes = axes.index("Y")
    height, width = data.shape[lead_axes : lead_axes + 2]
    rows = [0, height // 5, height // 2, height]
    cols = [0, width // 3, width - 7, width]
    temp = temp_name(path)
    pixels = open_output(temp, axes, data.shape, data.dtype, meta)
    tiles = [
        (lead, rows[i], rows[i + 1], cols[j], cols[j + 1])
        for lead in np.ndindex(*data.shape[:lead_axes])
        for i in range(3)
        for j in range(3)
    ]
    for k in np.random.default_rng(1).permutation(len(tiles)):
        lead, y0, y1, x0, x1 = tiles[k]
        pixels.write(lead, y0, x0, data[lead][y0:y1, x0:x1])
    pixels.finish()
    pixels.close()
    pixels.close()  # safe twice
    os.replace(temp, path)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no scratch left


def zarr_axes(axes):
    return axes.replace("YXS", "CYX").lower()


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("axes", list(CASES))
def test_every_layout_streams_into_every_format(tmp_path, axes, suffix):
    shape, dtype = CASES[axes]
    data, meta = random(shape, dtype), meta_for(axes)
    path = tmp_path / f"out{suffix}"
    stream(path, axes, data, meta)
    if suffix == ".ome.zarr":
        check_zarr(path, axes, data, meta)
    elif suffix == ".ome.tif":
        check_ome_tiff(path, axes, data, meta)
    else:
        check_imagej(path, axes, data, meta)


def check_zarr(path, axes, data, meta):
    import zarr

    group = zarr.open_group(str(path), mode="r")
    stored = group["0"][...]
    np.testing.assert_array_equal(np.moveaxis(stored, -3, -1) if "S" in axes else stored, data)
    image = group.attrs["multiscales"][0]
    assert image["version"] == "0.4" and image["name"] == "sample"
    assert "".join(a["name"] for a in image["axes"]) == zarr_axes(axes)
    units = {a["name"]: a.get("unit") for a in image["axes"]}
    assert units["y"] == units["x"] == "micrometer"
    scale = image["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale[-2:] == [0.5, 0.25]
    if "T" in axes:
        assert units["t"] == "second" and scale[0] == 1.5
    channels = group.attrs["omero"]["channels"]
    labels = [c["label"] for c in channels]
    if "C" in axes:
        assert labels == ["DAPI", "GFP"]
        assert len({c["color"] for c in channels}) == 2
    elif "S" in axes:
        assert [c["color"] for c in channels] == ["FF0000", "00FF00", "0000FF"]
        assert group.attrs["pdmfuse"]["rgb"] is True
    else:
        assert channels[0]["color"] == "FFFFFF"
    window = channels[0]["window"]
    if data.dtype.kind == "u":
        assert (window["start"], window["end"]) == (0, np.iinfo(data.dtype).max)
    else:
        assert (window["start"], window["end"]) == (float(data.min()), float(data.max()))
    if meta.values:
        assert labels == ["focus position"]
        assert group.attrs["pdmfuse"] == {"values": "focus position", "unit": "micrometer"}


def ome(tif):
    return tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]


def check_ome_tiff(path, axes, data, meta):
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        assert tif.is_ome and series.axes == axes and series.shape == data.shape
        np.testing.assert_array_equal(series.asarray(), data)
        assert tif.pages.first.is_tiled
        check_ome_meta(ome(tif), meta)


def check_ome_meta(image, meta):
    pixels = image["Pixels"]
    assert image["Name"] == "sample"
    assert (pixels["PhysicalSizeY"], pixels["PhysicalSizeX"]) == (0.5, 0.25)
    assert pixels["PhysicalSizeXUnit"] == "µm"
    if meta.time_interval:
        assert (pixels["TimeIncrement"], pixels["TimeIncrementUnit"]) == (1.5, "s")
    if meta.channel_names:
        assert [c["Name"] for c in pixels["Channel"]] == ["DAPI", "GFP"]
    if meta.values:
        assert image["Description"] == "focus position, micrometer"
        assert pixels["Channel"]["Name"] == "focus position"


def check_imagej(path, axes, data, meta):
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        assert tif.is_imagej and series.axes == axes and series.shape == data.shape
        np.testing.assert_array_equal(series.asarray(), data)
        info = tif.imagej_metadata
        page = tif.pages.first
        assert info["unit"] == "um"
        assert page.tags["XResolution"].value == (4, 1)  # 4 pixels per µm
        assert page.tags["YResolution"].value == (2, 1)
        assert info["Properties"]["Name"] == "sample"
    if meta.time_interval:
        assert info["finterval"] == 1.5
    if meta.channel_names:
        assert info["Labels"][:2] == ["DAPI", "GFP"]
    if meta.values:
        assert "focus position" in info["Info"] and "micrometer" in info["Info"]
        assert info["Properties"]["Values"] == "focus position"


def test_int32_tif_is_an_ome_tiff_with_the_metadata(tmp_path):
    data = random((2, 37, 50), np.int32)
    meta = meta_for("CYX")
    path = tmp_path / "deep.tif"
    stream(path, "CYX", data, meta)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome and not tif.is_imagej
        np.testing.assert_array_equal(tif.series[0].asarray(), data)
        assert tif.series[0].axes == "CYX"
        check_ome_meta(ome(tif), meta)


def test_large_tif_is_a_bigtiff_not_imagej():
    small = tiff_options("TCYX", (2, 2, 1000, 1000), np.uint16, OutputMeta())
    large = tiff_options("TCYX", (10, 2, 30_000, 30_000), np.uint16, OutputMeta())  # 36 GB
    assert small["imagej"] and "ome" not in small
    assert large["ome"] and large["bigtiff"] and "imagej" not in large
    rgba = tiff_options("YXS", (100, 100, 4), np.uint8, OutputMeta())
    assert rgba["ome"]  # ImageJ opens RGB, not RGBA


PYRAMIDS = {"TCYX": ((2, 2, 600, 530), np.uint16), "YXS": ((600, 530, 3), np.uint8)}


@pytest.mark.parametrize("suffix", [".ome.zarr", ".ome.tif"])
@pytest.mark.parametrize("axes", list(PYRAMIDS))
def test_pyramid_levels_are_2x2_means(tmp_path, axes, suffix):
    import zarr

    shape, dtype = PYRAMIDS[axes]
    data = random(shape, dtype, seed=2)
    path = tmp_path / f"big{suffix}"
    stream(path, axes, data, meta_for(axes))
    if suffix == ".ome.zarr":
        group = zarr.open_group(str(path), mode="r")
        datasets = group.attrs["multiscales"][0]["datasets"]
        assert [d["coordinateTransformations"][0]["scale"][-1] for d in datasets] == [0.25, 0.5]
        level0, level1 = group["0"][...], group["1"][...]
        if "S" in axes:
            level0, level1 = np.moveaxis(level0, -3, -1), np.moveaxis(level1, -3, -1)
    else:
        with tifffile.TiffFile(path) as tif:
            levels = tif.series[0].levels
            assert len(levels) == 2 and levels[1].axes == axes
            level0, level1 = levels[0].asarray(), levels[1].asarray()
    np.testing.assert_array_equal(level0, data)
    y = axes.index("Y")
    split = (*shape[:y], 300, 2, 265, 2, *shape[y + 2 :])
    means = data.astype(float).reshape(split).mean(axis=(y + 1, y + 3))
    np.testing.assert_array_equal(level1, np.rint(means).astype(dtype))
