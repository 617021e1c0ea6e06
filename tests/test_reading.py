"""Reading inputs as one lazy Image: TIFF stacks and hyperstacks, OME-Zarr, folders and lists of
planes; their axes, physical sizes, names and channel names, and the refusals of bad inputs."""

from __future__ import annotations

import json
import warnings

import dask.array as da
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr

from napari_pdmfuse import FuseOptions, InputError, PdmFuseWarning, ReadError, fuse_files
from napari_pdmfuse.reading import Image, guarded, natural_key, normalise_axes, open_image
from napari_pdmfuse.training import rendering as render


def stack_of(dtype: type, rgb: bool = False, n: int = 5) -> np.ndarray:
    """A small rendered focus stack rescaled to ``dtype``, deterministic."""
    planes = render.random_stack(np.random.default_rng(0), (64, 80), n_slices=n, rgb=rgb).stack
    scaled = planes.astype(np.float64) / max(int(planes.max()), 1) * np.iinfo(dtype).max
    return scaled.astype(dtype)


def one_sentence(message: str) -> bool:
    text = message.replace("e.g. ", "")
    return "\n" not in message and message.endswith(".") and ". " not in text


# ---------------------------------------------------------------------------------------------
# TIFF stacks


def test_tiff_is_read_lazily_in_blocks_of_the_files_chunks(tmp_path):
    """Shape and dtype come from the header: the (damaged) pixel data are not touched."""
    path = tmp_path / "big.tif"
    shape = (3, 2048, 2048)
    tifffile.imwrite(
        path,
        np.zeros(shape, np.uint16),
        photometric="minisblack",
        bigtiff=True,
        tile=(256, 256),
        compression="zlib",
    )
    with tifffile.TiffFile(path) as tif:
        offsets = tif.pages[1].dataoffsets
    assert path.stat().st_size < 200_000  # compressed zeros: far smaller than the 24 MiB stack
    with path.open("r+b") as handle:  # garbage in every tile of the second plane
        for offset in offsets:
            handle.seek(offset)
            handle.write(b"\xff" * 8)

    stack = open_image([path], for_viewing=True)

    assert isinstance(stack.data, da.Array)
    assert stack.data.shape == shape and stack.data.dtype == np.uint16
    assert stack.data.chunksize == (1, 512, 512)  # one plane (for viewing), 2 × 2 TIFF tiles
    assert stack.axes == "ZYX" and not stack.rgb and stack.channel_axis is None
    assert np.asarray(stack.data[0, :300, :300]).sum() == 0  # undamaged plane reads fine
    with pytest.raises(ReadError, match=r"big\.tif"):
        np.asarray(stack.data[1, :10, :10])
    # The fusion reads every plane of a block in one go, yet only what is asked for.
    hyper = open_image([path])
    assert hyper.data.chunksize == (3, 512, 512)
    assert np.asarray(hyper.data[0, :300, :300]).sum() == 0


def test_uncompressed_tiff_is_memory_mapped(tmp_path):
    """Contiguous planes are read a tile at a time, not a plane at a time, in native order."""
    path = tmp_path / "big_endian.tif"
    data = np.arange(2 * 1100 * 16, dtype=np.uint16).reshape(2, 1100, 16)
    tifffile.imwrite(path, data, byteorder=">", photometric="minisblack")
    stack = open_image([path], for_viewing=True)
    assert stack.data.dtype == np.dtype("=u2")
    assert stack.data.chunksize == (1, 512, 16)  # the file itself has one strip per plane
    np.testing.assert_array_equal(
        np.asarray(stack.data[:, 1000:1050, 3:9]), data[:, 1000:1050, 3:9]
    )


def test_truncated_tiff_is_a_read_error(tmp_path):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, stack_of(np.uint16), photometric="minisblack")
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)
    with pytest.raises(ReadError, match=r"cut\.tif is not a readable image"):
        np.asarray(open_image([path]).data)


def test_imagej_hyperstack_scale(tmp_path):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(
        path,
        stack_of(np.uint16),
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.5),
        metadata={"axes": "ZYX", "spacing": 2.0, "unit": "micron"},
    )
    stack = open_image([path])
    assert stack.axes == "ZYX" and stack.data.shape == (5, 64, 80)
    assert stack.z_spacing == pytest.approx(2.0)
    assert stack.pixel_size == pytest.approx((0.5, 0.25))
    assert stack.unit == "um"


def test_ome_z_axis_moved_first_and_physical_size(tmp_path):
    path = tmp_path / "czyx.ome.tif"
    data = np.stack([stack_of(np.uint8), 255 - stack_of(np.uint8)])  # (C=2, Z, Y, X)
    tifffile.imwrite(
        path,
        data,
        ome=True,
        metadata={"axes": "CZYX", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.3, "PhysicalSizeZ": 1.5},
    )
    image = open_image([path])
    assert image.axes == "CZYX" and image.data.shape == (2, 5, 64, 80)
    assert image.has_channels and image.n_channels == 2 and not image.rgb
    stack = image.as_stack()
    assert stack.axes == "ZYXC" and stack.data.shape == (5, 64, 80, 2)
    assert stack.channel_axis == 3 and not stack.rgb
    np.testing.assert_array_equal(np.asarray(stack.data[..., 1]), data[1])
    assert stack.z_spacing == pytest.approx(1.5) and stack.z_step_um == pytest.approx(1.5)
    assert stack.pixel_size == pytest.approx((0.3, 0.3))


def test_plain_multipage_rgb(tmp_path):
    path = tmp_path / "rgb.tif"
    data = stack_of(np.uint8, rgb=True)
    tifffile.imwrite(path, data, photometric="rgb")
    stack = open_image([path])
    assert stack.axes == "ZYXS" and stack.rgb and stack.channel_axis is None
    np.testing.assert_array_equal(np.asarray(stack.data), data)
    assert stack.z_spacing is None and stack.pixel_size is None


def plain_save(path, data):
    """``tifffile.imwrite(path, data)`` with no options, as a script would save a stack (its
    warning that later versions will save (3, Y, X) as pages is beside the point here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tifffile.imwrite(path, data)


@pytest.mark.parametrize("n_planes", [3, 4])
def test_a_plain_save_of_3_or_4_planes_is_a_stack(tmp_path, n_planes):
    path = tmp_path / "plain.tif"
    data = stack_of(np.uint16, n=n_planes)
    plain_save(path, data)
    with tifffile.TiffFile(path) as tif:  # one page of 3 or 4 samples, the shape recorded
        assert len(tif.pages) == 1 and tif.series[0].axes == "SYX"
        assert tif.shaped_metadata[0]["shape"] == list(data.shape)
    stack = open_image([path])
    assert stack.axes == "ZYX" and not stack.rgb
    np.testing.assert_array_equal(np.asarray(stack.data), data)
    fused = fuse_files(path, tmp_path / "fused.tif", FuseOptions(method="argmax"))
    assert fused.shape == data.shape
    # One RGB(A) picture saved the same way is told apart by naming its axes: nothing to fuse.
    with pytest.raises(InputError, match="have no Z axis; a focus stack needs Z, Y and X"):
        open_image([path], axes="SYX")


def test_a_plain_save_of_one_rgb_picture_is_still_one_image(tmp_path):
    path = tmp_path / "photo.tif"
    plain_save(path, stack_of(np.uint8, rgb=True, n=2)[0])  # (Y, X, 3): samples last
    with pytest.raises(InputError, match="holds a single 2-D image, not a stack"):
        open_image([path])


def test_singleton_axes_are_dropped(tmp_path):
    path = tmp_path / "tzyx.tif"
    tifffile.imwrite(path, stack_of(np.uint16)[None], imagej=True, metadata={"axes": "TZYX"})
    stack = open_image([path])
    assert stack.axes == "ZYX" and stack.data.shape == (5, 64, 80)


# ---------------------------------------------------------------------------------------------
# Folders and lists of planes


def test_folder_in_natural_order_ignoring_other_files(tmp_path):
    for k in (1, 2, 10):
        iio.imwrite(tmp_path / f"z{k}.png", np.full((8, 9), k, np.uint8))
    (tmp_path / "notes.txt").write_text("not a plane")
    iio.imwrite(tmp_path / ".hidden.png", np.zeros((3, 3), np.uint8))
    stack = open_image([tmp_path])
    assert [p.name for p in stack.sources] == ["z1.png", "z2.png", "z10.png"]
    assert np.asarray(stack.data)[:, 0, 0].tolist() == [1, 2, 10]
    assert stack.axes == "ZYX"


def test_list_of_files_keeps_given_order_and_colour(tmp_path):
    data = stack_of(np.uint8, rgb=True, n=3)
    paths = []
    for k in (2, 0, 1):
        paths.append(tmp_path / f"p{k}.tif")
        tifffile.imwrite(paths[-1], data[k], photometric="rgb")
    stack = open_image(paths)
    assert stack.axes == "ZYXS" and stack.rgb
    np.testing.assert_array_equal(np.asarray(stack.data), data[[2, 0, 1]])


def test_natural_key():
    names = ["a10.png", "a2.png", "A1.png", "b.png"]
    assert sorted(names, key=natural_key) == ["A1.png", "a2.png", "a10.png", "b.png"]


# ---------------------------------------------------------------------------------------------
# Input errors


def _plane(path, shape=(16, 16), dtype=np.uint8):
    tifffile.imwrite(path, np.zeros(shape, dtype))
    return path


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda d: [d / "missing.tif"], ReadError, "does not exist"),
        (lambda d: [_text(d / "notes.tif")], ReadError, "not a readable image"),
        (lambda d: [_text(d / "notes.png")], ReadError, "not a readable image"),
        (lambda d: [_plane(d / "one.tif")], InputError, "single 2-D image"),
        (lambda d: [_jpeg(d / "one.jpg")], InputError, "single 2-D image"),
        (lambda d: [_empty(d / "empty")], InputError, "contains no images"),
        (
            lambda d: [_plane(d / "a.tif"), _plane(d / "b.tif", (16, 17))],
            InputError,
            "b.tif is 16×17",
        ),
        (
            lambda d: [_plane(d / "a.tif"), _plane(d / "b.tif", dtype=np.uint16)],
            InputError,
            "b.tif",
        ),
        (lambda d: [_plane(d / "a.tif"), _plane(d / "a.tif")], InputError, "given twice"),
        (
            lambda d: [_plane(d / "a.tif"), _plane(d / "s.tif", (2, 16, 16))],
            InputError,
            "not one plane",
        ),
        (lambda d: [_hyper(d / "tyx.tif", "TYX")], InputError, "none is Z"),
    ],
)
def test_bad_inputs(tmp_path, make, error, match):
    with pytest.raises(error, match=match) as info:
        open_image(make(tmp_path))
    message = str(info.value)
    assert one_sentence(message)
    assert info.value.__cause__ is None  # no library exception chained into the user's view


def _text(path):
    path.write_text("this is not an image\n")
    return path


def _jpeg(path):
    iio.imwrite(path, np.zeros((16, 16, 3), np.uint8))
    return path


def _empty(path):
    path.mkdir()
    (path / "readme.txt").write_text("no planes here")
    return path


def _hyper(path, axes):
    shape = {"TZYX": (2, 3, 8, 8), "TYX": (3, 8, 8)}[axes]
    tifffile.imwrite(path, np.zeros(shape, np.uint8), imagej=True, metadata={"axes": axes})
    return path


def test_a_zarr_claiming_an_impossible_shape_is_one_sentence(tmp_path):
    store = zarr.create_array(str(tmp_path / "stack.zarr"), shape=(3, 64, 64), chunks=(1, 32, 32),
                              dtype=np.uint8, zarr_format=2)  # fmt: skip
    store[...] = 1
    meta = tmp_path / "stack.zarr" / ".zarray"
    meta.write_text(json.dumps(json.loads(meta.read_text()) | {"shape": [3, 64, 2**63]}))
    with pytest.raises(InputError) as refused:  # not dask's MemoryError laying out its blocks
        open_image([tmp_path / "stack.zarr"])
    assert str(refused.value) == (
        f"{tmp_path / 'stack.zarr'} claims an array of shape (3, 64, 9223372036854775808), larger "
        "than any image; check the file or export it again."
    )


def test_zarr_input_is_guarded_and_pickles_for_cluster_workers(tmp_path, monkeypatch):
    import pickle

    data = (np.random.default_rng(0).random((3, 64, 64)) * 250).astype(np.uint8)
    store = zarr.create_array(str(tmp_path / "stack.zarr"), shape=data.shape, chunks=(1, 32, 32),
                              dtype=data.dtype, zarr_format=2)  # fmt: skip
    store[...] = data
    monkeypatch.chdir(tmp_path)
    hyper = open_image(["stack.zarr"])  # a relative path, as typed
    assert hyper.axes == "ZYX" and hyper.data.chunksize == (3, 64, 64)
    shipped = pickle.dumps(hyper.data)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # a worker started in another folder
    np.testing.assert_array_equal(pickle.loads(shipped).compute(), data)
    monkeypatch.chdir(tmp_path)
    for chunk in (tmp_path / "stack.zarr").glob("1.*"):
        chunk.write_bytes(b"\xff" * 8)  # damage the second plane
    with pytest.raises(ReadError, match=r"stack\.zarr is not a readable image"):
        hyper.data.compute()


def test_grouped_planes_stay_within_a_bounded_chunk(tmp_path):
    # Strips as wide as the image: all 40 planes of a block would be 168 MB read in one go
    path = tmp_path / "wide.tif"
    tifffile.imwrite(path, np.zeros((40, 256, 8192), np.uint16), compression="zlib",
                     rowsperstrip=64, metadata={"axes": "ZYX"})  # fmt: skip
    data = open_image([path]).data
    assert data.chunksize == (16, 256, 8192)  # 64 MiB


def test_a_tiles_window_is_read_alone_not_whole_blocks(tmp_path, monkeypatch):
    from napari_pdmfuse.stack import as_stack

    path = tmp_path / "tiled.tif"
    data = np.arange(4 * 600 * 700, dtype=np.uint16).reshape(4, 600, 700)
    tifffile.imwrite(path, data, tile=(64, 64), metadata={"axes": "ZYX"})
    stack = as_stack(open_image([path]).data)  # grey: a channel axis is added
    asked = []
    getitem = guarded.GuardedArray.__getitem__
    monkeypatch.setattr(
        guarded.GuardedArray, "__getitem__", lambda s, k: asked.append(k) or getitem(s, k)
    )
    window = np.asarray(stack.window(slice(100, 200), slice(300, 420)))
    np.testing.assert_array_equal(window[..., 0], data[:, 100:200, 300:420])
    rows = [k[1] for k in asked if k[1].stop > k[1].start]
    cols = [k[2] for k in asked if k[2].stop > k[2].start]
    assert min(r.start for r in rows) >= 100 and max(r.stop for r in rows) <= 200
    assert min(c.start for c in cols) >= 300 and max(c.stop for c in cols) <= 420


# ---------------------------------------------------------------------------------------------
# Time points and channels


def test_time_lapse_keeps_t_and_is_not_one_stack(tmp_path):
    image = open_image([_hyper(tmp_path / "tzyx.tif", "TZYX")])
    assert image.axes == "TZYX" and image.has_time and not image.has_channels
    assert (image.n_times, image.n_planes, image.shape_yx) == (2, 3, (8, 8))
    with pytest.raises(InputError, match="more than one focus stack"):
        image.as_stack()


# ---------------------------------------------------------------------------------------------
# Axes


@pytest.mark.parametrize(
    ("axes", "shape", "match"),
    [
        ("ZQYX", (3, 2, 8, 8), "Unknown axis 'Q' in axes 'ZQYX'"),
        ("ZZYX", (3, 2, 8, 8), "Axis Z appears twice"),
        ("TZYX", (3, 8, 8), r"name 4 axes but s\.tif has 3 \(shape \(3, 8, 8\)\)"),
        ("TCYX", (2, 3, 8, 8), r"of s\.tif have no Z axis"),
        ("CYZ", (2, 3, 8), "have no X axis"),
        ("ZCYXS", (3, 2, 8, 8, 3), "both channels"),
        ("ZYXS", (3, 8, 8, 2), r"S axis of s\.tif has 2 samples"),
        ("", (3, 8, 8), "one letter per axis"),
    ],
)
def test_bad_axes_are_refused_in_one_sentence(axes, shape, match):
    with pytest.raises(InputError, match=match) as info:
        normalise_axes(axes, shape, source="s.tif")
    assert one_sentence(str(info.value))


def test_images_check_and_upper_case_their_axes():
    assert normalise_axes("tzcyx", (2, 3, 2, 8, 8)) == "TZCYX"
    image = Image(np.zeros((3, 8, 6, 3), np.uint8), "zyxs", name="rgb")
    assert image.axes == "ZYXS" and image.rgb and image.n_channels == 3
    assert image.shape_yx == (8, 6) and image.n_times is None and image.z_step_um is None
    with pytest.raises(InputError, match="name 3 axes but the data has 4"):
        Image(np.zeros((3, 8, 8, 3)), "ZYX")
    with pytest.raises(InputError, match="2 channel names"):
        Image(np.zeros((3, 3, 8, 8)), "ZCYX", channel_names=("a", "b"))
    data = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    stack = Image(data, "CZYX", z_spacing=2.0, unit="um").as_stack()
    assert stack.axes == "ZYXC" and stack.channel_axis == 3 and stack.z_step_um == 2.0
    np.testing.assert_array_equal(stack.data, np.moveaxis(data, 0, -1))


def test_axes_given_for_a_file_are_checked_like_any_other(tmp_path):
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, np.zeros((2, 3, 8, 8), np.uint8), photometric="minisblack")
    assert open_image([path], axes="czyx").channel_names is None
    with pytest.raises(InputError, match=r"'TCYX' of .*s\.tif have no Z axis"):
        open_image([path], axes="TCYX")


# ---------------------------------------------------------------------------------------------
# Names


def test_name_is_the_ome_image_name_else_the_file_or_folder_stem(tmp_path):
    data = stack_of(np.uint8, n=3)
    named, plain, upper = tmp_path / "a.ome.tif", tmp_path / "b.ome.tif", tmp_path / "c.TIF"
    tifffile.imwrite(named, data, ome=True, metadata={"axes": "ZYX", "Name": "cells"})
    tifffile.imwrite(plain, data, ome=True, metadata={"axes": "ZYX"})  # named "Image0"
    tifffile.imwrite(upper, data, photometric="minisblack", metadata={"axes": "ZYX"})
    assert [open_image([p]).name for p in (named, plain, upper)] == ["cells", "b", "c"]
    ome_zarr(tmp_path / "d.ome.zarr", data, [1.0, 1.0, 1.0], name="sample")
    ome_zarr(tmp_path / "e.ome.zarr", data, [1.0, 1.0, 1.0])
    assert open_image([tmp_path / "d.ome.zarr"]).name == "sample"
    assert open_image([tmp_path / "e.ome.zarr"]).name == "e"
    planes = tmp_path / "planes"
    planes.mkdir()
    for k in range(2):
        iio.imwrite(planes / f"z{k}.png", data[k])
    assert open_image([planes]).name == "planes"


# ---------------------------------------------------------------------------------------------
# OME-Zarr metadata, and physical sizes that are no sizes


def ome_zarr(path, data, scale, *, version="0.4", axes="zyx", units=None, name=None, attrs=None):
    """An OME-Zarr image of one level, NGFF ``version`` 0.4 (zarr 2) or 0.5 (zarr 3)."""
    units = units or {}
    group = zarr.open_group(str(path), mode="w", zarr_format=2 if version == "0.4" else 3)
    group.create_array("0", shape=data.shape, dtype=data.dtype)[...] = data
    kinds = {"t": "time", "c": "channel"}
    image = {
        "axes": [
            {"name": a, "type": kinds.get(a, "space"), **({"unit": units[a]} if a in units else {})}
            for a in axes
        ],
        "datasets": [
            {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        ],
        **({"name": name} if name else {}),
    }
    meta = {"multiscales": [image], **(attrs or {})}
    if version == "0.4":
        image["version"] = "0.4"
        group.attrs.update(meta)
    else:
        group.attrs.update({"ome": {"version": "0.5", **meta}})
    return path


def test_ome_zarr_05_units_time_step_and_channel_labels(tmp_path):
    data = np.arange(2 * 2 * 3 * 8 * 8, dtype=np.uint16).reshape(2, 2, 3, 8, 8)
    units = {"t": "minute", "c": None, "z": "nanometer", "y": "nanometer", "x": "nanometer"}
    units = {k: v for k, v in units.items() if v}
    omero = {"channels": [{"label": "DAPI"}, {"label": "GFP"}]}
    path = ome_zarr(tmp_path / "lapse.ome.zarr", data, [0.5, 1.0, 500.0, 250.0, 250.0],
                    version="0.5", axes="tczyx", units=units, attrs={"omero": omero})  # fmt: skip
    image = open_image([path])
    assert image.axes == "TCZYX" and image.data.shape == data.shape
    assert image.z_spacing == pytest.approx(0.5) and image.unit == "um"
    assert image.pixel_size == pytest.approx((0.25, 0.25))
    assert image.time_interval == pytest.approx(30.0)
    assert image.channel_names == ("DAPI", "GFP")
    np.testing.assert_array_equal(np.asarray(image.data), data)


@pytest.mark.parametrize("scale", [["a", 1.0, 1.0], "1, 1, 1", [1.0, 1.0], [True, 1.0, 1.0]])
def test_ome_zarr_scale_that_is_not_numbers_is_a_read_error(tmp_path, scale):
    units = dict.fromkeys("zyx", "micrometer")
    path = ome_zarr(tmp_path / "bad.ome.zarr", stack_of(np.uint8, n=3), scale, units=units)
    with pytest.raises(ReadError, match=r"bad\.ome\.zarr has OME-Zarr coordinateTransformations"):
        open_image([path])
    with pytest.raises(ReadError) as info:
        open_image([path])
    assert one_sentence(str(info.value)) and info.value.__cause__ is None


def _ome_sizes(path, z, xy):
    tifffile.imwrite(path, stack_of(np.uint16, n=3), ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeZ": z, "PhysicalSizeX": xy, "PhysicalSizeY": xy})  # fmt: skip
    return path


def _imagej_spacing(path, z, xy):
    tifffile.imwrite(path, stack_of(np.uint16, n=3), imagej=True, resolution=(1 / xy, 1 / xy),
                     metadata={"axes": "ZYX", "spacing": z, "unit": "um"})  # fmt: skip
    return path


def _zarr_sizes(path, z, xy):
    units = dict.fromkeys("zyx", "micrometer")
    return ome_zarr(path, stack_of(np.uint16, n=3), [z, xy, xy], units=units)


@pytest.mark.parametrize("write", [_ome_sizes, _imagej_spacing, _zarr_sizes])
@pytest.mark.parametrize(
    ("z", "xy", "ignored"),
    [
        (-1.5, 0.25, "Z step of -1.5"),
        (0.0, 0.25, "Z step of 0"),
        (float("nan"), 0.25, "Z step of nan"),
        (float("inf"), 0.25, "Z step of inf"),
        (2.0, float("nan"), "pixel size of nan × nan"),
        (2.0, -0.5, "pixel size of -0.5 × -0.5"),
    ],
)
def test_physical_sizes_that_are_no_sizes_are_ignored_with_a_warning(
    tmp_path, write, z, xy, ignored
):
    if write is _imagej_spacing and not (np.isfinite(xy) and xy > 0):
        pytest.skip("ImageJ resolution tags cannot hold such a pixel size")
    suffix = ".ome.zarr" if write is _zarr_sizes else ".tif"
    path = write(tmp_path / f"sizes{suffix}", z, xy)
    with pytest.warns(PdmFuseWarning, match=f"{ignored}, which is no size.*value is ignored"):
        image = open_image([path])
    if "Z step" in ignored:
        assert image.z_spacing is None and image.pixel_size == pytest.approx((xy, xy))
    else:
        assert image.pixel_size is None and image.z_spacing == pytest.approx(z)
    assert image.unit == "um"


def test_good_physical_sizes_read_without_a_warning(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = open_image([_zarr_sizes(tmp_path / "good.ome.zarr", 2.0, 0.25)])
    assert image.z_spacing == 2.0 and image.pixel_size == (0.25, 0.25) and image.unit == "um"
