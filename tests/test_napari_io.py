"""The napari reader and writer contributions, through npe2 as napari calls them (no viewer)."""

from __future__ import annotations

import dask.array as da
import npe2
import numpy as np
import pytest
import tifffile
import zarr

from napari_pdmfuse._reader import get_reader
from napari_pdmfuse._writer import ome_axes, physical_sizes

PLUGIN = "napari-pdmfuse"


@pytest.fixture(autouse=True, scope="module")
def discovered():
    """Make npe2 find the installed plugin, as napari does at start-up."""
    npe2.PluginManager.instance().discover()


def read(path):
    """Layer data tuples as napari gets them from this plugin's reader."""
    return npe2.read([str(path)], stack=False, plugin_name=PLUGIN)


def uint16(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 4000, shape, dtype=np.uint16)


# -- reader -------------------------------------------------------------------------------------


def test_tiled_bigtiff_opens_lazily(tmp_path, monkeypatch):
    stack = uint16((4, 512, 384))
    path = tmp_path / "big.ome.tif"
    tifffile.imwrite(path, stack, bigtiff=True, tile=(128, 128), metadata={"axes": "ZYX"})

    def whole_file_read(*args, **kwargs):
        raise AssertionError("the reader decoded the whole file")

    monkeypatch.setattr(tifffile.TiffFile, "asarray", whole_file_read)
    monkeypatch.setattr(tifffile, "imread", whole_file_read)

    [(data, kwargs, kind)] = read(path)

    assert kind == "image"
    assert isinstance(data, da.Array)
    assert data.shape == stack.shape
    assert data.chunksize == (1, 512, 384)  # whole 128² TIFF tiles, grouped up to 512² px
    np.testing.assert_array_equal(data[2, 128:256, :128].compute(), stack[2, 128:256, :128])
    assert kwargs["name"] == "big"
    assert kwargs["axis_labels"] == ("z", "y", "x")
    assert kwargs["rgb"] is False


def test_ome_tiff_scale_and_units(tmp_path):
    path = tmp_path / "stack.ome.tif"
    metadata = {"axes": "ZYX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.5, "PhysicalSizeZ": 2.0}
    tifffile.imwrite(path, uint16((3, 32, 48)), ome=True, metadata=metadata)

    [(data, kwargs, _)] = read(path)

    assert isinstance(data, da.Array)
    assert kwargs["name"] == "stack"
    assert kwargs["scale"] == (2.0, 0.5, 0.25)
    assert kwargs["units"] == ("micrometer",) * 3
    assert kwargs["metadata"]["z_spacing"] == 2.0


def test_rgb_and_multichannel_tiffs(tmp_path):
    rgb = tmp_path / "rgb.ome.tif"
    rgb_stack = np.zeros((3, 16, 20, 3), np.uint8)
    tifffile.imwrite(rgb, rgb_stack, photometric="rgb", metadata={"axes": "ZYXS"})
    [(data, kwargs, _)] = read(rgb)
    assert data.shape == (3, 16, 20, 3)
    assert kwargs["rgb"] is True
    assert kwargs["axis_labels"] == ("z", "y", "x")

    channels = tmp_path / "channels.ome.tif"
    hyper = uint16((4, 2, 16, 20))
    metadata = {"axes": "ZCYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "PhysicalSizeZ": 1.5}
    tifffile.imwrite(channels, hyper, photometric="minisblack", metadata=metadata)
    [(data, kwargs, _)] = read(channels)
    assert isinstance(data, da.Array)
    np.testing.assert_array_equal(data.compute(), hyper)  # channels stay in front of Y, X
    assert kwargs["axis_labels"] == ("z", "c", "y", "x")
    np.testing.assert_allclose(kwargs["scale"], (1.5, 1.0, 0.5, 0.5))
    assert kwargs["units"] == ("micrometer", "pixel", "micrometer", "micrometer")


def compatible(name):
    """The plugins napari finds for a file name; with more than one, napari asks the user."""
    readers = npe2.PluginManager.instance().iter_compatible_readers([name])
    return sorted({r.plugin_name for r in readers})


def test_napari_asks_no_question_for_plain_tiffs_and_vendor_files():
    # Plain TIFFs go to napari's own reader alone, vendor files to this one alone.
    for name in ("stack.tif", "STACK.TIFF"):
        assert compatible(name) == ["napari"]
    for name in ("cells.czi", "cells.ND2", "cells.lif"):
        assert compatible(name) == [PLUGIN]
    # napari's reader claims *.ome.tif and *.zarr too: napari asks once ("remember" keeps it).
    for name in ("stack.ome.tif", "stack.ome.tiff", "stack.ome.zarr"):
        assert compatible(name) == ["napari", PLUGIN]


def write_czi(path, data):
    """A CZI of ``data`` (C, Z, Y, X), 0.2 µm pixels, 1.5 µm steps, channels DAPI and GFP."""
    pyczi = pytest.importorskip("pylibCZIrw.czi")
    with pyczi.create_czi(str(path), exist_ok=True) as czi:
        for c, planes in enumerate(data):
            for z, plane in enumerate(planes):
                czi.write(plane, plane={"C": c, "Z": z, "T": 0})
        czi.write_metadata(
            channel_names={0: "DAPI", 1: "GFP"}, scale_x=2e-7, scale_y=2e-7, scale_z=1.5e-6
        )
    return path


def test_czi_opens_lazily_with_labels_scale_and_channel_names(tmp_path):
    pytest.importorskip("bioio_czi")
    stack = uint16((2, 3, 24, 32))  # C, Z, Y, X
    path = write_czi(tmp_path / "cells.czi", stack)

    [(data, kwargs, kind)] = read(path)

    assert kind == "image"
    assert isinstance(data, da.Array)
    np.testing.assert_array_equal(data.compute(), stack.transpose(1, 0, 2, 3))
    assert kwargs["name"] == "cells"
    assert kwargs["axis_labels"] == ("z", "c", "y", "x")
    np.testing.assert_allclose(kwargs["scale"], (1.5, 1.0, 0.2, 0.2))
    assert kwargs["units"] == ("micrometer", "pixel", "micrometer", "micrometer")
    assert kwargs["metadata"]["channel_names"] == ("DAPI", "GFP")


def test_time_lapse_with_named_channels(tmp_path):
    path = tmp_path / "lapse.ome.tif"
    lapse = uint16((2, 3, 2, 16, 20))  # T, Z, C, Y, X
    metadata = {
        "axes": "TZCYX",
        "Name": "embryo",
        "PhysicalSizeX": 0.5,
        "PhysicalSizeY": 0.5,
        "PhysicalSizeZ": 2.0,
        "Channel": {"Name": ["DAPI", "GFP"]},
    }
    tifffile.imwrite(path, lapse, ome=True, photometric="minisblack", metadata=metadata)

    [(data, kwargs, _)] = read(path)

    assert isinstance(data, da.Array) and data.chunksize[:3] == (1, 1, 1)  # one plane a chunk
    np.testing.assert_array_equal(data.compute(), lapse)
    assert kwargs["name"] == "embryo"  # the OME image name, not the file's
    assert kwargs["axis_labels"] == ("t", "z", "c", "y", "x")
    assert kwargs["scale"] == (1.0, 2.0, 1.0, 0.5, 0.5)
    assert kwargs["units"] == ("pixel", "micrometer", "pixel", "micrometer", "micrometer")
    assert kwargs["metadata"]["channel_names"] == ("DAPI", "GFP")


def test_reader_passes_on_what_napari_reads_itself(tmp_path):
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, uint16((32, 32)))
    assert get_reader(str(flat)) is None
    rgb_plane = tmp_path / "photo.tif"
    tifffile.imwrite(rgb_plane, np.zeros((32, 32, 3), np.uint8), photometric="rgb")
    assert get_reader(str(rgb_plane)) is None
    assert get_reader(str(tmp_path / "missing.tif")) is None
    zarr.create_array(str(tmp_path / "plane.zarr"), data=uint16((32, 32)))
    assert get_reader(str(tmp_path / "plane.zarr")) is None
    zarr.open_group(str(tmp_path / "group.zarr"), mode="w").attrs["something"] = "else"
    assert get_reader(str(tmp_path / "group.zarr")) is None
    assert get_reader([str(flat), str(rgb_plane)]) is None


def _ngff_axes():
    return [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]


def test_ome_zarr_multiscale(tmp_path):
    stack = uint16((5, 64, 80))
    group = zarr.open_group(str(tmp_path / "stack.ome.zarr"), mode="w", zarr_format=2)
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "name": "sample",
            "axes": _ngff_axes(),
            "datasets": [
                {
                    "path": str(level),
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [2.0, 0.5 * 2**level, 0.5 * 2**level]},
                        {"type": "translation", "translation": [0.0, 10.0, 20.0]},
                    ],
                }
                for level in range(2)
            ],
        }
    ]
    group.create_array("0", data=stack, chunks=(1, 32, 32))
    group.create_array("1", data=stack[:, ::2, ::2], chunks=(1, 32, 32))

    [(data, kwargs, _)] = read(tmp_path / "stack.ome.zarr")

    assert kwargs["multiscale"] is True
    assert [level.shape for level in data] == [(5, 64, 80), (5, 32, 40)]
    assert all(isinstance(level, da.Array) for level in data)
    np.testing.assert_array_equal(data[0][1].compute(), stack[1])
    assert kwargs["name"] == "sample"
    assert kwargs["axis_labels"] == ("z", "y", "x")
    assert kwargs["scale"] == (2.0, 0.5, 0.5)
    assert kwargs["translate"] == (0.0, 10.0, 20.0)
    assert kwargs["units"] == ("micrometer",) * 3


def test_ome_zarr_v05_and_plain_zarr(tmp_path):
    stack = uint16((4, 32, 32))
    group = zarr.open_group(str(tmp_path / "v05.ome.zarr"), mode="w", zarr_format=3)
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": _ngff_axes(),
                "datasets": [
                    {
                        "path": "s0",
                        "coordinateTransformations": [{"type": "scale", "scale": [3.0, 1.0, 1.0]}],
                    }
                ],
            }
        ],
    }
    group.create_array("s0", data=stack, chunks=(1, 16, 16))
    [(data, kwargs, _)] = read(tmp_path / "v05.ome.zarr")
    assert isinstance(data, da.Array) and data.shape == stack.shape
    assert "multiscale" not in kwargs
    assert kwargs["name"] == "v05"
    assert kwargs["scale"] == (3.0, 1.0, 1.0)

    zarr.create_array(str(tmp_path / "plain.zarr"), data=stack, chunks=(1, 16, 16))
    [(data, kwargs, _)] = read(tmp_path / "plain.zarr")
    assert isinstance(data, da.Array)
    np.testing.assert_array_equal(data.compute(), stack)


# -- writer -------------------------------------------------------------------------------------


def ome_pixels(path):
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        return tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]


def test_writer_round_trips_physical_sizes(tmp_path):
    focus = np.random.default_rng(0).random((40, 50)).astype(np.float32)
    meta = {
        "name": "stack focus map",
        "scale": (0.5, 0.25),
        "units": ("micrometer", "micrometer"),
        "metadata": {"focus_unit": "µm"},
    }
    path = tmp_path / "focus.ome.tif"
    written = npe2.write(str(path), [(focus, meta, "image")], plugin_name=PLUGIN)

    assert written == [str(path)]
    pixels = ome_pixels(path)
    assert pixels["PhysicalSizeX"] == 0.25 and pixels["PhysicalSizeY"] == 0.5
    assert pixels["PhysicalSizeXUnit"] == "µm"
    np.testing.assert_array_equal(tifffile.imread(path), focus)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind

    # The reader needs a stack, so round-trip a 3-D RGB layer through reader and writer too.
    rgb = np.random.default_rng(1).integers(0, 255, (3, 20, 30, 3), dtype=np.uint8)
    meta = {
        "rgb": True,
        "scale": (2.0, 0.5, 0.25),
        "units": ("micrometer",) * 3,
        "axis_labels": ("z", "y", "x"),
    }
    path = tmp_path / "stack.ome.tif"
    npe2.write(str(path), [(rgb, meta, "image")], plugin_name=PLUGIN)
    [(data, kwargs, _)] = read(path)
    np.testing.assert_array_equal(np.asarray(data), rgb)
    assert kwargs["rgb"] is True
    assert kwargs["scale"] == (2.0, 0.5, 0.25)
    assert kwargs["units"] == ("micrometer",) * 3


def test_writer_units_and_axes():
    assert ome_axes({}, 2) == "YX"
    assert ome_axes({}, 3) == "ZYX"
    assert ome_axes({"axis_labels": ("c", "y", "x")}, 3) == "CYX"
    assert ome_axes({"axis_labels": ("t", "z", "c", "y", "x")}, 5) == "TZCYX"
    # Scaled but without units: OME's default micrometre; unscaled pixels: no size at all.
    assert physical_sizes({"scale": (0.5, 0.5)}, "YX")["PhysicalSizeXUnit"] == "µm"
    assert physical_sizes({"scale": (1.0, 1.0), "units": ("pixel", "pixel")}, "YX") == {}
    nm = physical_sizes({"scale": (1.0, 80.0), "units": ("nanometer", "nanometer")}, "YX")
    assert nm == {
        "PhysicalSizeX": 80.0,
        "PhysicalSizeXUnit": "nm",
        "PhysicalSizeY": 1.0,
        "PhysicalSizeYUnit": "nm",
    }


def test_writer_refuses_a_layout_ome_cannot_hold(tmp_path):
    from napari_pdmfuse import OutputError

    with pytest.raises(OutputError, match="OME-TIFF"):
        npe2.write(
            str(tmp_path / "x.ome.tif"),
            [(np.zeros((2, 2, 2, 2, 2, 4, 4), np.uint8), {}, "image")],
            plugin_name=PLUGIN,
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype", [np.int64, np.uint64, np.float16])
def test_writer_refuses_a_pixel_type_ome_xml_lacks_in_one_sentence(tmp_path, dtype):
    from napari_pdmfuse import OutputError

    path = tmp_path / "deep.ome.tif"
    with pytest.raises(OutputError) as refused:
        npe2.write(str(path), [(np.zeros((4, 4), dtype), {}, "image")], plugin_name=PLUGIN)
    assert str(refused.value) == (
        f"The output {path} is an OME-TIFF, which cannot hold {np.dtype(dtype)} pixels; name it "
        ".tif or .ome.zarr, which keep them."
    )
    assert list(tmp_path.iterdir()) == []
