"""Writing results atomically: TIFF, OME-TIFF and OME-Zarr outputs, and temporary files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_pdmfuse import FusionResult, OutputError, render, writing
from napari_pdmfuse.writing import Scale, atomic, check_outputs, write_outputs, write_tiff


def stack_of(dtype: type, rgb: bool = False, n: int = 5) -> np.ndarray:
    """A small rendered focus stack rescaled to ``dtype``, deterministic."""
    planes = render.random_stack(np.random.default_rng(0), (64, 80), n_slices=n, rgb=rgb).stack
    scaled = planes.astype(np.float64) / max(int(planes.max()), 1) * np.iinfo(dtype).max
    return scaled.astype(dtype)


# ---------------------------------------------------------------------------------------------
# Writing


def _result(fused: np.ndarray) -> FusionResult:
    shape = fused.shape[:2]
    return FusionResult(
        fused=fused,
        focus_map=np.linspace(0, 4, shape[0] * shape[1], dtype=np.float32).reshape(shape),
        confidence=np.full(shape, 0.5, np.float32),
        method="wavelet",
    )


def test_write_outputs_types_and_scale(tmp_path):
    fused = stack_of(np.uint16)[0]
    out = [tmp_path / "f.tif", tmp_path / "m.tif", tmp_path / "c.tif"]
    written = write_outputs(
        _result(fused),
        out[0],
        focus_map=out[1],
        confidence=out[2],
        scale=Scale((0.5, 0.25), "um"),
    )
    assert written == out
    with tifffile.TiffFile(out[0]) as tif:
        assert tif.is_imagej and tif.imagej_metadata["unit"] == "um"
        assert tif.pages.first.tags["XResolution"].value == (4, 1)  # 0.25 µm pixels
        np.testing.assert_array_equal(tif.asarray(), fused)
    for path in out[1:]:
        assert tifffile.imread(path).dtype == np.float32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.tif", "f.tif", "m.tif"]


def test_write_rgb16_as_plain_rgb_tiff(tmp_path):
    fused = stack_of(np.uint16, rgb=True)[0]
    write_tiff(tmp_path / "rgb.tif", fused, rgb=True, scale=Scale((2.0, 2.0), "um"))
    with tifffile.TiffFile(tmp_path / "rgb.tif") as tif:
        page = tif.pages.first
        assert page.photometric == tifffile.PHOTOMETRIC.RGB and not tif.is_imagej
        assert page.tags["XResolution"].value == (5000, 1)  # 2 µm pixels = 5000 px/cm
        np.testing.assert_array_equal(tif.asarray(), fused)


def test_interrupted_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "f.tif"
    target.write_bytes(b"previous result")

    def interrupted(path, data, **kwargs):
        path.write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(writing, "write_tiff", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_outputs(_result(np.zeros((4, 4), np.uint8)), target, overwrite=True)
    assert target.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["f.tif"]


def test_failed_write_is_an_output_error(tmp_path, monkeypatch):
    def full_disk(path, data, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writing, "write_tiff", full_disk)
    with pytest.raises(OutputError, match="No space left"):
        write_outputs(_result(np.zeros((4, 4), np.uint8)), tmp_path / "f.tif")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("outputs", "match"),
    [
        (["f.png"], "not named .tif"),
        (["f.tif", "f.tif"], "two outputs"),
        (["in.tif"], "also an input"),
        (["old.tif"], "already exists"),
        (["missing/f.tif"], "does not exist"),
        (["folder.tif"], "is a folder"),
        (["plain.ome.zarr"], "but no zarr store"),
        (["old.tif.zarr"], "already exists"),
        (["planes/f.tif"], "inside the input folder"),
    ],
)
def test_check_outputs_refuses(tmp_path, outputs, match):
    (tmp_path / "in.tif").write_bytes(b"input")
    (tmp_path / "old.tif").write_bytes(b"old")
    (tmp_path / "folder.tif").mkdir()
    (tmp_path / "plain.ome.zarr").mkdir()  # a folder that merely has the name: never replaced
    (tmp_path / "old.tif.zarr").mkdir()
    (tmp_path / "old.tif.zarr" / ".zgroup").write_text("{}")
    (tmp_path / "planes").mkdir()
    inputs = [tmp_path / "in.tif", tmp_path / "planes"]
    with pytest.raises(OutputError, match=match):
        check_outputs([tmp_path / o for o in outputs], inputs)


def test_check_outputs_allows_overwrite_and_skips_none(tmp_path):
    (tmp_path / "old.tif").write_bytes(b"old")
    paths = check_outputs([tmp_path / "old.tif", None], [], overwrite=True)
    assert paths == [tmp_path / "old.tif"]


# ---------------------------------------------------------------------------------------------
# Streaming into temporary TIFFs, and what killed runs leave behind


@pytest.mark.parametrize(
    ("data", "options"),
    [
        (stack_of(np.uint16, n=3), {}),
        (stack_of(np.uint8, rgb=True, n=3), {}),
        (
            np.stack([stack_of(np.uint8, n=3), 255 - stack_of(np.uint8, n=3)], -1),
            {"channel_axis": 3},
        ),
        (stack_of(np.uint16, n=3).astype(np.int16) - 1000, {}),
    ],
    ids=["grey-u16", "rgb-u8", "channels-u8", "grey-int16"],
)
@pytest.mark.parametrize("suffix", [".tif", ".ome.tif", ".ome.zarr"])
def test_file_sink_equals_the_in_memory_result(tmp_path, data, options, suffix):
    import zarr

    from napari_pdmfuse.fusion import fuse, plan

    memory = fuse(data, method="argmax", tile=32, **options)
    job = plan(data, method="argmax", tile=32, **options)
    paths = [tmp_path / (n + suffix) for n in ("f", "m", "c")]
    sink = writing.FileSink(job.stack, paths[0], focus_map=paths[1], confidence=paths[2])
    for _ in job.run(sink):
        pass
    sink.finish()
    sink.close()
    if suffix.endswith(".tif"):
        fused, focus, confidence = (tifffile.imread(p) for p in paths)
        planes = job.stack.layout == "channels"  # channels as planes (C, Y, X), colour as YXS
        assert not list(tmp_path.glob(".*"))  # the OME-TIFF's scratch stores are gone
    else:
        fused, focus, confidence = (zarr.open_group(str(p), mode="r")["0"][...] for p in paths)
        planes = job.stack.layout != "grey"  # OME-Zarr: channels and colours on a c axis
    if planes:
        fused = np.moveaxis(fused, 0, -1)
    np.testing.assert_array_equal(fused, memory.fused)
    np.testing.assert_array_equal(focus, memory.focus_map)
    np.testing.assert_array_equal(confidence, memory.confidence)


def stream_1100x600(path):
    """Fuse a 1100 × 600 uint16 stack (0.5 × 0.25 µm pixels) tile by tile into ``path``."""
    from napari_pdmfuse.fusion import plan

    data = np.tile(stack_of(np.uint16, n=3), (1, 18, 8))[:, :1100, :600]
    job = plan(data, method="argmax", tile=512)
    sink = writing.FileSink(job.stack, path, scale=Scale((0.5, 0.25), "um"))
    for _ in job.run(sink):
        pass
    sink.finish()
    sink.close()


def test_ome_tiff_output_is_tiled_with_a_pyramid(tmp_path):
    path = tmp_path / "fused.ome.tif"
    stream_1100x600(path)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.is_tiled and tif.pages.first.tilewidth == 512
        levels = tif.series[0].levels
        assert [level.shape for level in levels] == [(1100, 600), (550, 300), (275, 150)]
        assert 'PhysicalSizeX="0.25"' in tif.ome_metadata
        level0, level1 = levels[0].asarray().astype(float), levels[1].asarray()
    expected = level0.reshape(550, 2, 300, 2).mean(axis=(1, 3))
    np.testing.assert_array_equal(level1, np.rint(expected).astype(np.uint16))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fused.ome.tif"]


def test_ome_zarr_output_has_a_pyramid_napari_opens(tmp_path):
    import zarr

    from napari_pdmfuse._reader import get_reader

    path = tmp_path / "fused.ome.zarr"
    stream_1100x600(path)
    group = zarr.open_group(str(path), mode="r")
    image = group.attrs["multiscales"][0]
    assert [group[d["path"]].shape for d in image["datasets"]] == [
        (1100, 600),
        (550, 300),
        (275, 150),
    ]
    assert image["datasets"][2]["coordinateTransformations"][0]["scale"] == [2.0, 1.0]
    assert image["axes"][0]["unit"] == "micrometer"
    level0, level1 = group["0"][...].astype(float), group["1"][...]
    expected = level0.reshape(550, 2, 300, 2).mean(axis=(1, 3))
    np.testing.assert_array_equal(level1, np.rint(expected).astype(np.uint16))
    layers = get_reader(str(path))(str(path))
    assert layers[0][1]["multiscale"] is True
    assert layers[0][1]["scale"] == (0.5, 0.25)


def test_temp_names_carry_pid_and_host(tmp_path):
    import os

    temp = atomic.temp_name(tmp_path / "fused.tif")
    match = atomic.TEMP_PATTERN.match(temp.name)
    assert match and match["name"] == "fused.tif" and int(match["pid"]) == os.getpid()
    assert match["host"] == atomic.HOST and temp.parent == tmp_path


def test_only_stale_temps_of_dead_processes_here_are_removed(tmp_path, monkeypatch):
    import os

    host = atomic.HOST
    other = "000000" if host != "000000" else "111111"
    dead, alive = 999_999_999, os.getpid()
    files = {
        "dead": f".fused.tif.pdmfuse-tmp-{dead}-{host}-0123abcd",
        "alive": f".fused.tif.pdmfuse-tmp-{alive}-{host}-0123abcd",
        "other-host": f".fused.tif.pdmfuse-tmp-{dead}-{other}-0123abcd",
        "newer": f".focus.tif.pdmfuse-tmp-{dead}-{host}-4567cdef",
        "not-ours": f".fused.tif.tmp-{dead}",
        "output": "fused.tif",
    }
    for name in files.values():
        (tmp_path / name).write_bytes(b"x")
    old = atomic.STARTED - 60
    for key in ("dead", "alive", "other-host", "not-ours", "output"):
        os.utime(tmp_path / files[key], (old, old))
    monkeypatch.setattr(writing, "pid_alive", lambda pid: pid != dead)

    removed = atomic.clean_stale_temps(tmp_path)

    assert [p.name for p in removed] == [files["dead"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        v for k, v in files.items() if k != "dead"
    )


def test_pid_alive():
    import os
    import subprocess
    import sys

    assert atomic.pid_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not atomic.pid_alive(child.pid)


def test_atomic_files_clean_stale_temps_first(tmp_path, monkeypatch):
    import os

    stale = tmp_path / f".f.tif.pdmfuse-tmp-999999999-{atomic.HOST}-0123abcd"
    stale.write_bytes(b"left by a killed run")
    os.utime(stale, (atomic.STARTED - 60, atomic.STARTED - 60))
    monkeypatch.setattr(writing, "pid_alive", lambda pid: False)
    write_outputs(_result(np.zeros((4, 4), np.uint8)), tmp_path / "f.tif")
    assert [p.name for p in tmp_path.iterdir()] == ["f.tif"]


def test_large_outputs_are_plain_tiffs_not_imagej():
    _, small = writing.tiff_layout((1000, 1000), np.dtype(np.uint8))
    shape, large = writing.tiff_layout((70_000, 70_000, 2), np.dtype(np.uint8))  # 9.8 GB
    assert small["imagej"] and not large["imagej"]  # ImageJ files cannot be BigTIFF
    assert shape == (2, 70_000, 70_000)  # channels first, as written
