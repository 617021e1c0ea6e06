"""Streamed outputs: every axes layout into every format, tile by tile, with its metadata,
each file checked by the libraries Fiji, QuPath and OMERO users rely on (ome-types for OME-XML,
ome-zarr-models for OME-Zarr 0.5 and 0.4)."""

import os

import numpy as np
import pytest
import tifffile

from napari_pdmfuse import FuseOptions, OutputError, fuse_files
from napari_pdmfuse.errors import InputError
from napari_pdmfuse.planning import Job
from napari_pdmfuse.writing import OutputMeta, open_output
from napari_pdmfuse.writing.atomic import temp_name
from napari_pdmfuse.writing.tiff import tiff_options

#: Output formats: a name suffix, and for OME-Zarr the NGFF version asked for.
FORMATS = {
    "zarr-0.5": (".ome.zarr", "0.5"),
    "zarr-0.4": (".ome.zarr", "0.4"),
    "ome-tiff": (".ome.tif", None),
    "tiff": (".tif", None),
}

CASES = {
    "YX": ((37, 50), np.uint16),
    "YXS": ((37, 50, 3), np.uint8),
    "CYX": ((2, 37, 50), np.uint16),
    "TYX": ((3, 37, 50), np.float32),
    "TCYX": ((2, 2, 37, 50), np.uint16),
}

FUSION = {"software": "napari-pdmfuse", "version": "1.2.3", "method": "pdmnet"}
FUSION |= {"weights_sha256": "0f" * 32}


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
        fusion=FUSION,
    )


def random(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.normal(10, 3, shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def stream(path, axes, data, meta, version=None):
    """Write ``data`` as a job does: under a temporary name, 3 × 3 uneven tiles per plane in
    a shuffled order, then move it into place."""
    lead_axes = axes.index("Y")
    height, width = data.shape[lead_axes : lead_axes + 2]
    rows = [0, height // 5, height // 2, height]
    cols = [0, width // 3, width - 7, width]
    temp = temp_name(path)
    options = {} if version is None else {"ome_zarr_version": version}
    pixels = open_output(temp, axes, data.shape, data.dtype, meta, **options)
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


@pytest.mark.parametrize("kind", list(FORMATS))
@pytest.mark.parametrize("axes", list(CASES))
def test_every_layout_streams_into_every_format(tmp_path, axes, kind):
    suffix, version = FORMATS[kind]
    shape, dtype = CASES[axes]
    data, meta = random(shape, dtype), meta_for(axes)
    path = tmp_path / f"out{suffix}"
    stream(path, axes, data, meta, version)
    if suffix == ".ome.zarr":
        check_zarr(path, axes, data, meta, version)
    elif suffix == ".ome.tif":
        check_ome_tiff(path, axes, data, meta)
    else:
        check_imagej(path, axes, data, meta)


def ngff(path, version):
    """The group's NGFF attributes (under "ome" in 0.5) and its other attributes, after
    ome-zarr-models has validated the group, its arrays and its omero block against the spec."""
    import zarr
    from ome_zarr_models.common.omero import Omero
    from ome_zarr_models.v04 import Image as Image04
    from ome_zarr_models.v05 import Image as Image05

    group = zarr.open_group(str(path), mode="r")
    assert group.metadata.zarr_format == (3 if version == "0.5" else 2)
    attrs = group.attrs.asdict()
    if version == "0.5":
        model = Image05.from_zarr(group)
        Omero.model_validate(model.ome_attributes.model_extra["omero"])
        assert attrs["ome"]["version"] == "0.5" and "multiscales" not in attrs
        return group, attrs["ome"], attrs
    model = Image04.from_zarr(group)
    assert model.attributes.omero is not None
    return group, attrs, attrs


def check_zarr(path, axes, data, meta, version):
    group, ome, attrs = ngff(path, version)
    stored = group["0"][...]
    np.testing.assert_array_equal(np.moveaxis(stored, -3, -1) if "S" in axes else stored, data)
    image = ome["multiscales"][0]
    assert image["name"] == "sample"
    assert "".join(a["name"] for a in image["axes"]) == zarr_axes(axes)
    units = {a["name"]: a.get("unit") for a in image["axes"]}
    assert units["y"] == units["x"] == "micrometer"
    scale = image["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale[-2:] == [0.5, 0.25]
    if "T" in axes:
        assert units["t"] == "second" and scale[0] == 1.5
    channels = ome["omero"]["channels"]
    assert ome["omero"]["name"] == "sample"
    labels = [c["label"] for c in channels]
    if "C" in axes:
        assert labels == ["DAPI", "GFP"]
        assert len({c["color"] for c in channels}) == 2
    elif "S" in axes:
        assert [c["color"] for c in channels] == ["FF0000", "00FF00", "0000FF"]
        assert attrs["pdmfuse"]["rgb"] is True
    else:
        assert channels[0]["color"] == "FFFFFF"
    window = channels[0]["window"]
    if data.dtype.kind == "u":
        assert (window["start"], window["end"]) == (0, np.iinfo(data.dtype).max)
    else:
        assert (window["start"], window["end"]) == (float(data.min()), float(data.max()))
    assert attrs["pdmfuse"]["fusion"] == FUSION
    if meta.values:
        assert labels == ["focus position"]
        assert attrs["pdmfuse"]["values"] == "focus position"
        assert attrs["pdmfuse"]["unit"] == "micrometer"


def ome(tif):
    """The OME-XML's one Image, after ome-types has validated the XML against the OME schema."""
    import ome_types

    ome_types.from_xml(tif.ome_metadata, validate=True)
    return tifffile.xml2dict(tif.ome_metadata)["OME"]


def check_ome_tiff(path, axes, data, meta):
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        assert tif.is_ome and series.axes == axes and series.shape == data.shape
        np.testing.assert_array_equal(series.asarray(), data)
        assert tif.pages.first.is_tiled
        check_ome_meta(ome(tif), meta)


def check_ome_meta(xml, meta):
    image = xml["Image"]
    pixels = image["Pixels"]
    assert image["Name"] == "sample"
    assert (pixels["PhysicalSizeY"], pixels["PhysicalSizeX"]) == (0.5, 0.25)
    assert pixels["PhysicalSizeXUnit"] == "µm"
    if meta.time_interval:
        assert (pixels["TimeIncrement"], pixels["TimeIncrementUnit"]) == (1.5, "s")
    if meta.channel_names:
        assert [c["Name"] for c in pixels["Channel"]] == ["DAPI", "GFP"]
    annotation = xml["StructuredAnnotations"]["MapAnnotation"]
    assert annotation["Namespace"] == "napari-pdmfuse"
    pairs = {m["K"]: m["value"] for m in annotation["Value"]["M"]}
    assert {k: pairs[k] for k in FUSION} == FUSION
    if meta.values:
        assert image["Description"] == "focus position, micrometer"
        assert pixels["Channel"]["Name"] == "focus position"
        assert (pairs["values"], pairs["unit"]) == ("focus position", "micrometer")


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
        assert {k: info["Properties"][k] for k in FUSION} == FUSION
        assert "method: pdmnet" in info["Info"]
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
    shape, dtype = PYRAMIDS[axes]
    data = random(shape, dtype, seed=2)
    path = tmp_path / f"big{suffix}"
    stream(path, axes, data, meta_for(axes))
    if suffix == ".ome.zarr":
        group, ome, _ = ngff(path, "0.5")
        datasets = ome["multiscales"][0]["datasets"]
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


def test_an_unknown_ome_zarr_version_is_refused(tmp_path):
    with pytest.raises(InputError, match=r"OME-Zarr version '0\.3'.*0\.5, 0\.4"):
        open_output(
            tmp_path / "a.ome.zarr", "YX", (4, 4), np.uint8, OutputMeta(), ome_zarr_version="0.3"
        )
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Every pixel type the readers accept, into every format: kept, or refused before any work

#: The types a stack can have (bool and complex are refused on reading).
PIXEL_TYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
               "float16", "float32", "float64"]  # fmt: skip

#: What OME-XML has no pixel type for.
NOT_OME = {"int64", "uint64", "float16"}


def read_back(path):
    if path.name.endswith(".ome.zarr"):
        import zarr

        return zarr.open_group(str(path), mode="r")["0"][...]
    return tifffile.imread(path)


@pytest.mark.parametrize("suffix", [".tif", ".ome.tif", ".ome.zarr"])
@pytest.mark.parametrize("dtype", PIXEL_TYPES)
def test_every_pixel_type_is_kept_in_every_format_or_refused_up_front(
    tmp_path, monkeypatch, dtype, suffix
):
    stack = random((3, 24, 28), dtype, seed=3)  # integers over the type's whole range
    source = tmp_path / "stack.tif"
    tifffile.imwrite(source, stack, photometric="minisblack", metadata={"axes": "ZYX"})
    target = tmp_path / f"fused{suffix}"
    if suffix == ".ome.tif" and dtype in NOT_OME:

        def no_work(*args, **kwargs):
            raise AssertionError("the run started")

        monkeypatch.setattr(Job, "run", no_work)
        with pytest.raises(OutputError) as refused:
            fuse_files(source, target, FuseOptions(method="argmax"))
        assert str(refused.value) == (
            f"{source}: The output {target} is an OME-TIFF, which cannot hold {dtype} pixels; "
            "name it .tif or .ome.zarr, which keep them."
        )
        assert sorted(p.name for p in tmp_path.iterdir()) == ["stack.tif"]
        return
    fuse_files(source, target, FuseOptions(method="argmax"))
    fused = read_back(target)
    assert fused.dtype == np.dtype(dtype) and fused.shape == (24, 28)
    # argmax copies each pixel from one plane: every value is the stack's own, to the last bit
    assert (fused[None] == stack).any(axis=0).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["stack.tif", target.name])


@pytest.mark.parametrize("dtype", ["int64", "uint16"])
def test_a_big_endian_stack_is_written_in_native_order(tmp_path, dtype):
    stack = random((3, 24, 28), dtype, seed=4)
    source = tmp_path / "stack.tif"
    tifffile.imwrite(source, stack, byteorder=">", photometric="minisblack")
    for suffix in (".tif", ".ome.zarr"):
        target = tmp_path / f"fused{suffix}"
        fuse_files(source, target, FuseOptions(method="argmax"))
        fused = read_back(target)
        assert fused.dtype == np.dtype(dtype) and fused.dtype.isnative
        assert (fused[None] == stack).any(axis=0).all()


def test_a_tif_of_a_type_ome_xml_lacks_records_its_metadata_as_json(tmp_path):
    data = random((2, 2, 37, 50), np.int64)
    meta = meta_for("TCYX")
    path = tmp_path / "deep.tif"
    stream(path, "TCYX", data, meta)
    with tifffile.TiffFile(path) as tif:
        assert not tif.is_ome and not tif.is_imagej
        series = tif.series[0]
        assert series.axes == "TCYX" and series.dtype == np.int64
        np.testing.assert_array_equal(series.asarray(), data)
        recorded = tif.shaped_metadata[0]
        page = tif.pages.first
        assert page.tags["ResolutionUnit"].value == 3  # centimetres
        assert page.tags["XResolution"].value == (40_000, 1)  # 0.25 µm
        assert page.tags["YResolution"].value == (20_000, 1)
    assert recorded["name"] == "sample" and recorded["fusion"] == FUSION
    assert recorded["channel_names"] == ["DAPI", "GFP"] and recorded["time_interval"] == 1.5
    assert recorded["pixel_size"] == [0.5, 0.25] and recorded["unit"] == "um"


def test_pyramids_of_64_bit_integers_are_exact_means(tmp_path):
    """float64 holds 53 bits: a mean taken in it rounds, and the type's extremes wrap round."""
    info = np.iinfo(np.int64)
    data = np.full((1100, 1030), info.max, np.int64)
    data[::2] = info.max - 3
    data[:, :4] = info.min
    path = tmp_path / "big.ome.zarr"
    stream(path, "YX", data, OutputMeta())
    level1 = ngff(path, "0.5")[0]["1"][...]
    assert level1.dtype == np.int64
    assert (level1[:, :2] == info.min).all()
    assert (level1[:, 2:] == info.max - 1).all()  # (2 max - 3) / 2, half to even: max - 1
