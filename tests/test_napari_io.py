"""The napari reader and writer contributions, through npe2 as napari calls them (no viewer)."""

from __future__ import annotations

import os

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


def test_napari_asks_for_tiffs_and_zarr_not_for_vendor_files():
    # napari's own reader claims TIFF and zarr too: napari asks until a choice is remembered.
    for name in ("stack.tif", "STACK.TIFF", "stack.ome.tif", "stack.ome.zarr"):
        assert compatible(name) == ["napari", PLUGIN]
    for name in ("cells.czi", "cells.ND2", "cells.lif"):
        assert compatible(name) == [PLUGIN]


def test_plain_tiff_and_imagej_hyperstack_open_lazily(tmp_path, monkeypatch):
    plain = tmp_path / "plain.tif"
    stack = uint16((5, 64, 48))
    tifffile.imwrite(plain, stack, tile=(32, 32))  # tifffile's shaped description, no axes
    hyper = tmp_path / "hyper.tif"
    cells = uint16((4, 2, 32, 40), seed=1)  # Z, C, Y, X
    tifffile.imwrite(
        hyper,
        cells,
        imagej=True,
        resolution=(4.0, 4.0),  # pixels per µm: 0.25 µm pixels
        metadata={"axes": "ZCYX", "spacing": 1.5, "unit": "um", "Labels": ["DAPI", "GFP"] * 4},
    )

    def whole_file_read(*args, **kwargs):
        raise AssertionError("the reader decoded the whole file")

    monkeypatch.setattr(tifffile.TiffFile, "asarray", whole_file_read)
    monkeypatch.setattr(tifffile, "imread", whole_file_read)

    [(data, kwargs, kind)] = read(plain)
    assert kind == "image"
    assert isinstance(data, da.Array) and data.chunksize == (1, 64, 48)
    np.testing.assert_array_equal(data[3].compute(), stack[3])
    assert kwargs["name"] == "plain"
    assert kwargs["axis_labels"] == ("z", "y", "x")
    assert kwargs["scale"] == (1.0, 1.0, 1.0)
    assert "units" not in kwargs

    [(data, kwargs, _)] = read(hyper)
    assert isinstance(data, da.Array) and data.chunksize == (1, 1, 32, 40)  # a plane a chunk
    np.testing.assert_array_equal(data[2, 1].compute(), cells[2, 1])
    assert kwargs["axis_labels"] == ("z", "c", "y", "x")
    np.testing.assert_allclose(kwargs["scale"], (1.5, 1.0, 0.25, 0.25))
    assert kwargs["units"] == ("micrometer", "pixel", "micrometer", "micrometer")
    assert kwargs["metadata"]["channel_names"] == ("DAPI", "GFP")


def test_shaped_tiff_axes_and_resolution(tmp_path):
    path = tmp_path / "lapse.tif"
    lapse = uint16((3, 4, 24, 32))
    tifffile.imwrite(
        path,
        lapse,
        photometric="minisblack",
        metadata={"axes": "TZYX"},
        resolution=(2e4, 2e4),  # pixels per cm: 0.5 µm pixels
        resolutionunit="CENTIMETER",
    )
    [(data, kwargs, _)] = read(path)
    assert isinstance(data, da.Array)
    np.testing.assert_array_equal(data.compute(), lapse)
    assert kwargs["axis_labels"] == ("t", "z", "y", "x")
    np.testing.assert_allclose(kwargs["scale"], (1.0, 1.0, 0.5, 0.5))
    assert kwargs["units"] == ("pixel", "pixel", "micrometer", "micrometer")


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


def test_every_tiff_opens_so_the_reader_can_be_the_default(tmp_path):
    # Chosen as napari's reader for *.tif, the plugin must open TIFFs that hold no stack too.
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, uint16((32, 40)))
    [(data, kwargs, _)] = read(flat)
    assert isinstance(data, da.Array) and data.shape == (32, 40)
    assert kwargs["axis_labels"] == ("y", "x") and kwargs["rgb"] is False

    photo = tmp_path / "photo.tif"
    tifffile.imwrite(photo, np.zeros((32, 40, 3), np.uint8), photometric="rgb")
    [(data, kwargs, _)] = read(photo)
    assert data.shape == (32, 40, 3) and kwargs["rgb"] is True

    channels = tmp_path / "channels.tif"  # an ImageJ image of two channels, no Z
    tifffile.imwrite(
        channels, uint16((2, 32, 40)), imagej=True, metadata={"axes": "CYX", "Labels": ["a", "b"]}
    )
    [(data, kwargs, _)] = read(channels)
    assert data.shape == (2, 32, 40)
    assert kwargs["axis_labels"] == ("c", "y", "x")
    assert kwargs["metadata"]["channel_names"] == ("a", "b")


def test_folder_of_planes_opens_as_one_stack(tmp_path):
    planes = [uint16((24, 32), seed=k) for k in range(3)]
    for k, plane in enumerate(planes):
        tifffile.imwrite(tmp_path / f"z{k + 1}.tif", plane)
    (tmp_path / "notes.txt").write_text("not a plane")
    [(data, kwargs, _)] = read(tmp_path)
    assert isinstance(data, da.Array)
    np.testing.assert_array_equal(data.compute(), np.stack(planes))
    assert kwargs["axis_labels"] == ("z", "y", "x")


@pytest.mark.parametrize("kind", ["stack file", "folder of planes", "single plane"])
def test_layer_names_from_undecodable_file_names_are_escaped(tmp_path, kind):
    # Linux names may hold bytes that are not UTF-8 (Python keeps them as lone surrogates) and
    # newlines; the layer shows them escaped, as messages and output metadata do.
    raw = os.fsdecode(b"st\xffack\n\xfe")
    if kind == "stack file":
        path = tmp_path / f"{raw}.ome.tif"
        tifffile.imwrite(path, uint16((3, 16, 16)), metadata={"axes": "ZYX"})
    elif kind == "single plane":
        path = tmp_path / f"{raw}.tif"
        tifffile.imwrite(path, uint16((16, 16)))
    else:
        path = tmp_path / raw
        path.mkdir()
        for k in range(3):
            tifffile.imwrite(path / f"z{k}.tif", uint16((16, 16), seed=k))
    [(data, kwargs, _)] = read(path)
    assert kwargs["name"] == "st\\xffack\\n\\xfe"
    kwargs["name"].encode("utf-8")  # raises UnicodeEncodeError on a lone surrogate
    assert data.shape[-2:] == (16, 16)


def test_reader_passes_on_what_it_cannot_read(tmp_path):
    assert get_reader(str(tmp_path / "missing.tif")) is None
    (tmp_path / "text.tif").write_text("not a TIFF")
    assert get_reader(str(tmp_path / "text.tif")) is None
    zarr.create_array(str(tmp_path / "plane.zarr"), data=uint16((32, 32)))
    assert get_reader(str(tmp_path / "plane.zarr")) is None
    zarr.open_group(str(tmp_path / "group.zarr"), mode="w").attrs["something"] = "else"
    assert get_reader(str(tmp_path / "group.zarr")) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    assert get_reader(str(empty)) is None
    assert get_reader([str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]) is None


def test_remembered_choice_opens_tiffs_without_a_question(tmp_path, monkeypatch):
    from napari.components import ViewerModel
    from napari.errors import MultipleReaderError
    from napari.settings import get_settings

    stack, flat = tmp_path / "stack.tif", tmp_path / "flat.tif"
    tifffile.imwrite(stack, uint16((5, 16, 16)))
    tifffile.imwrite(flat, uint16((16, 16)))
    viewer = ViewerModel()
    [layer] = viewer.open(str(stack))  # scripts: napari's own reader unless told otherwise
    assert isinstance(layer.data, np.ndarray)
    with pytest.raises(MultipleReaderError):  # File ▸ Open (plugin=None) asks which reader
        viewer.open(str(stack), plugin=None)

    settings = get_settings()
    # Leave the user's settings file alone (patched on the class: the instance's private
    # attributes cannot be restored once deleted).
    monkeypatch.setattr(type(settings), "_maybe_save", lambda self: None)
    monkeypatch.setattr(settings.plugins, "extension2reader", {"*.tif": PLUGIN})
    [layer] = viewer.open(str(stack), plugin=None)  # as after "remember this choice"
    assert isinstance(layer.data, da.Array)
    assert layer.axis_labels == ("z", "y", "x")
    assert layer.source.reader_plugin == PLUGIN
    [layer] = viewer.open(str(flat), plugin=None)
    assert isinstance(layer.data, da.Array) and layer.data.shape == (16, 16)


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

    [(data, kwargs, _)] = read(path)
    assert kwargs["scale"] == (0.5, 0.25)
    assert kwargs["units"] == ("micrometer", "micrometer")

    # A 3-D RGB layer through writer and reader.
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
