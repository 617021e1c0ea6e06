"""OME-Zarr stores at an address: fused tile by tile over HTTP like a store on disk, and plain
messages when the address cannot be reached or needs a package that is missing."""

from __future__ import annotations

import importlib.util
import pickle
import socket
import subprocess
import sys
import time
import urllib.request

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from napari_pdmfuse import fuse_files
from napari_pdmfuse.cli import main
from napari_pdmfuse.errors import ReadError
from napari_pdmfuse.options import FuseOptions
from napari_pdmfuse.reading import open_image
from napari_pdmfuse.reading import remote as remote_module

pytest.importorskip("aiohttp")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path``; yields its base address."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(base, timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail("the test HTTP server did not start")
                time.sleep(0.05)
        yield base
    finally:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture
def store(tmp_path):
    """An OME-Zarr 0.5 focus stack (5 planes of 96×80, 32² chunks, 0.5 µm pixels, 2 µm steps)."""
    stack = np.random.default_rng(3).integers(0, 60000, (5, 96, 80), dtype=np.uint16)
    path = tmp_path / "stack.ome.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    axes = [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
    scale = [{"type": "scale", "scale": [2.0, 0.5, 0.5]}]
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "name": "pollen",
                "axes": axes,
                "datasets": [{"path": "0", "coordinateTransformations": scale}],
            }
        ],
    }
    group.create_array("0", data=stack, chunks=(1, 32, 32))
    return path, stack


def test_remote_ome_zarr_opens_lazily_with_its_metadata(server, store):
    path, stack = store
    image = open_image([f"{server}/{path.name}"])

    assert isinstance(image.data, da.Array)
    assert image.axes == "ZYX"
    assert image.name == "pollen"
    assert image.pixel_size == (0.5, 0.5) and image.z_spacing == 2.0 and image.unit == "um"
    assert image.sources == ()  # no local file that an output could overwrite
    np.testing.assert_array_equal(image.data[:, 40:72, 8:40].compute(), stack[:, 40:72, 8:40])
    # A cluster worker gets the address and reads the same pixels from it.
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(image.data)).compute(), stack)


def test_remote_store_fuses_like_the_store_on_disk(server, store, tmp_path):
    path, _ = store
    options = FuseOptions(method="argmax", tile=64)
    remote_out = tmp_path / "remote.tif"
    local_out = tmp_path / "local.tif"
    fuse_files(f"{server}/{path.name}", remote_out, options)
    fuse_files(path, local_out, options)

    np.testing.assert_array_equal(tifffile.imread(remote_out), tifffile.imread(local_out))
    with tifffile.TiffFile(remote_out) as tif:
        assert tif.pages[0].tags["XResolution"].value == (2, 1)  # 0.5 µm pixels


def test_remote_store_fuses_from_the_command_line(server, store, tmp_path, capsys):
    path, stack = store
    out = tmp_path / "cli.tif"
    code = main(["fuse", f"{server}/{path.name}", "-o", str(out), "--method", "argmax", "-q"])
    capsys.readouterr()
    assert code == 0
    assert tifffile.imread(out).shape == stack.shape[1:]


def test_an_address_without_a_store_says_so(server):
    with pytest.raises(ReadError, match=r"/missing\.zarr holds no zarr store; check the address"):
        open_image([f"{server}/missing.zarr"])


def test_an_address_that_cannot_be_reached_says_so():
    url = f"http://127.0.0.1:{free_port()}/stack.ome.zarr"  # nothing listens there
    with pytest.raises(ReadError) as raised:
        open_image([url])
    message = str(raised.value)
    assert message.startswith(f"{url} cannot be reached")
    assert message.endswith("check the address, the network and any credentials, then try again.")


def test_s3_without_s3fs_names_the_extra(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        remote_module.importlib.util,
        "find_spec",
        lambda m, *a: None if m == "s3fs" else find_spec(m, *a),
    )
    with pytest.raises(ReadError) as raised:
        open_image(["s3://bucket/stack.ome.zarr"])
    assert str(raised.value) == (
        "Reading s3://bucket/stack.ome.zarr needs the s3fs package; install the optional remote "
        'reading with pip install "napari-pdmfuse[remote]".'
    )
