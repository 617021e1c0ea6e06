"""Microscope vendors' files (CZI, ND2, LIF) through the optional bioio readers: fused with
their pixel size and channel names kept, and plain messages when a reader is missing."""

from __future__ import annotations

import importlib.util
import pickle

import dask.array as da
import numpy as np
import pytest
import tifffile

from napari_pdmfuse import fuse_files
from napari_pdmfuse.cli import main
from napari_pdmfuse.errors import ReadError
from napari_pdmfuse.options import FuseOptions
from napari_pdmfuse.reading import open_image
from napari_pdmfuse.reading import vendor as vendor_module

EXTRA = 'pip install "napari-pdmfuse[formats]"'


def write_czi(path, data, channel_names=("DAPI", "GFP"), pixel_um=0.2, z_um=1.5):
    """A CZI of ``data`` (C, Z, Y, X) with its pixel size, Z step and channel names."""
    pyczi = pytest.importorskip("pylibCZIrw.czi")
    with pyczi.create_czi(str(path), exist_ok=True) as czi:
        for c, planes in enumerate(data):
            for z, plane in enumerate(planes):
                czi.write(plane, plane={"C": c, "Z": z, "T": 0})
        czi.write_metadata(
            channel_names=dict(enumerate(channel_names)),
            scale_x=pixel_um * 1e-6,
            scale_y=pixel_um * 1e-6,
            scale_z=z_um * 1e-6,
        )
    return path


@pytest.fixture
def stack():
    """Two channels of four planes whose sharpest plane differs across the image."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 4000, (2, 4, 40, 48), dtype=np.uint16)  # C, Z, Y, X


@pytest.fixture
def czi(tmp_path, stack):
    pytest.importorskip("bioio_czi")
    return write_czi(tmp_path / "cells.czi", stack)


def hyperstack_twin(tmp_path, stack):
    """The same planes as an ImageJ hyperstack with the same pixel size and Z step."""
    path = tmp_path / "twin.tif"
    tifffile.imwrite(
        path,
        stack.transpose(1, 0, 2, 3),
        imagej=True,
        resolution=(5.0, 5.0),
        metadata={"axes": "ZCYX", "unit": "um", "spacing": 1.5},
    )
    return path


def test_czi_opens_lazily_with_its_metadata(czi, stack):
    image = open_image([czi])

    assert isinstance(image.data, da.Array)
    assert image.axes == "CZYX"  # bioio's T of length one dropped
    np.testing.assert_array_equal(image.data.compute(), stack)
    assert image.channel_names == ("DAPI", "GFP")
    assert image.pixel_size == pytest.approx((0.2, 0.2))
    assert image.z_spacing == pytest.approx(1.5)
    assert image.unit == "um"
    assert image.name == "cells"
    assert image.sources == (czi,)
    # A cluster worker gets the file's name, and reads the same pixels from it.
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(image.data)).compute(), stack)


def test_czi_axes_can_be_named(czi, stack):
    image = open_image([czi], axes="TCZYX")  # bioio's own axes, length-one T included
    assert image.axes == "TCZYX"
    np.testing.assert_array_equal(image.data.compute(), stack[np.newaxis])
    assert open_image([czi], axes="czyx").axes == "CZYX"


def test_czi_fuses_keeping_pixel_size_and_channel_names(czi, stack, tmp_path):
    out = tmp_path / "fused.tif"
    fuse_files(czi, out, FuseOptions(method="argmax"))
    twin_out = tmp_path / "twin_fused.tif"
    fuse_files(hyperstack_twin(tmp_path, stack), twin_out, FuseOptions(method="argmax"))

    with tifffile.TiffFile(out) as tif:
        fused = tif.asarray()
        meta = tif.imagej_metadata
        x_resolution = tif.pages[0].tags["XResolution"].value
    assert fused.shape == (2, 40, 48) and fused.dtype == np.uint16
    np.testing.assert_array_equal(fused, tifffile.imread(twin_out))
    assert meta["Labels"] == ["DAPI", "GFP"]
    assert meta["unit"] == "um"
    assert x_resolution[0] / x_resolution[1] == pytest.approx(5.0)  # px per µm: 0.2 µm pixels


def test_czi_fuses_from_the_command_line(czi, tmp_path, capsys):
    out = tmp_path / "cli.ome.tif"
    focus = tmp_path / "focus.tif"
    focus_map = ["--focus-map", str(focus), "--focus-units", "um"]
    code = main(["fuse", str(czi), "-o", str(out), *focus_map, "--method", "argmax"])
    capsys.readouterr()

    assert code == 0
    with tifffile.TiffFile(out) as tif:
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
        assert tif.series[0].shape == (2, 40, 48)
    assert pixels["PhysicalSizeX"] == pytest.approx(0.2)
    assert [c["Name"] for c in pixels["Channel"]] == ["DAPI", "GFP"]
    focus_map = tifffile.imread(focus)
    assert focus_map.shape == (40, 48)
    # In µm from the file's Z step (1.5 µm): past the last slice index (3), up to 4.5 µm.
    assert 3.0 < focus_map.max() <= 4.5 + 1e-4 and focus_map.min() >= 0.0


def test_renamed_czi_is_recognised_by_its_first_bytes(czi, stack, tmp_path):
    renamed = tmp_path / "export.dat"
    renamed.write_bytes(czi.read_bytes())
    np.testing.assert_array_equal(open_image([renamed]).data.compute(), stack)


def test_damaged_czi_is_reported_as_damaged(czi, tmp_path):
    truncated = tmp_path / "cut.czi"
    truncated.write_bytes(czi.read_bytes()[:600])
    with pytest.raises(ReadError, match="not a readable image"):
        open_image([truncated]).data.compute()


@pytest.mark.parametrize(
    ("name", "head", "module", "what"),
    [
        ("a.czi", b"ZISRAWFILE", "bioio_czi", "a Zeiss CZI file"),
        ("b.nd2", b"\xda\xce\xbe\x0a", "bioio_nd2", "a Nikon ND2 file"),
        ("c.lif", b"\x70\x00\x00\x00\x10\x00\x00\x00\x2a", "bioio_lif", "a Leica LIF file"),
        ("renamed.bin", b"\xda\xce\xbe\x0a", "bioio_nd2", "a Nikon ND2 file"),
    ],
)
def test_a_missing_reader_names_the_extra_to_install(
    tmp_path, monkeypatch, name, head, module, what
):
    path = tmp_path / name
    path.write_bytes(head + bytes(64))
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        vendor_module.importlib.util,
        "find_spec",
        lambda m, *a: None if m == module else find_spec(m, *a),
    )
    with pytest.raises(ReadError) as raised:
        open_image([path])
    assert str(raised.value) == (
        f"{path} is {what}; install the optional formats with {EXTRA} to read it."
    )


def test_without_bioio_a_czi_asks_for_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "a.czi"
    path.write_bytes(b"ZISRAWFILE" + bytes(64))
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        vendor_module.importlib.util,
        "find_spec",
        lambda m, *a: None if m == "bioio" else find_spec(m, *a),
    )
    with pytest.raises(ReadError, match=r"is a Zeiss CZI file; install the optional formats"):
        open_image([path])


def test_a_file_no_reader_handles_is_an_unsupported_format(tmp_path):
    path = tmp_path / "scan.xyz"
    path.write_bytes(np.random.default_rng(1).bytes(512))
    with pytest.raises(ReadError) as raised:
        open_image([path])
    message = str(raised.value)
    assert "unsupported format (.xyz)" in message
    assert "damaged" not in message
    assert EXTRA in message
