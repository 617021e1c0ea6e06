"""Outputs on disk: checked before any work, streamed with pyramids, moved into place whole."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import tifffile

from napari_pdmfuse import FuseOptions, OutputError, fuse_files
from napari_pdmfuse.cli import main
from napari_pdmfuse.files import Outputs
from napari_pdmfuse.outputs import FileOutputs
from napari_pdmfuse.reading import open_image
from napari_pdmfuse.training import rendering as render
from napari_pdmfuse.version import __version__
from napari_pdmfuse.writing import atomic, check_outputs

ARGMAX = FuseOptions(method="argmax")


def stack_of(dtype: type, n: int = 3) -> np.ndarray:
    """A small rendered focus stack rescaled to ``dtype``, deterministic."""
    planes = render.random_stack(np.random.default_rng(0), (64, 80), n_slices=n).stack
    scaled = planes.astype(np.float64) / max(int(planes.max()), 1) * np.iinfo(dtype).max
    return scaled.astype(dtype)


def _stack_file(folder, data: np.ndarray | None = None, pixel=None):
    path = folder / "stack.tif"
    data = stack_of(np.uint16) if data is None else data
    if pixel is None:
        tifffile.imwrite(path, data, photometric="minisblack")
    else:
        tifffile.imwrite(
            path,
            data,
            imagej=True,
            resolution=(1 / pixel[1], 1 / pixel[0]),
            metadata={"axes": "ZYX", "unit": "um"},
        )
    return path


@pytest.mark.parametrize(
    "fault",
    [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")],
    ids=["interrupted", "disk-full"],
)
def test_a_failed_run_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, fault):
    source = _stack_file(tmp_path)
    target = tmp_path / "f.tif"
    target.write_bytes(b"previous result")

    def failing(self):
        raise fault

    monkeypatch.setattr(FileOutputs, "finish", failing)
    with pytest.raises((KeyboardInterrupt, OutputError)):
        fuse_files(source, target, ARGMAX, overwrite=True)
    assert target.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.tif", "stack.tif"]


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


def stream_1100x600(path):
    """Fuse a 1100 × 600 uint16 stack (0.5 × 0.25 µm pixels) tile by tile into ``path``."""
    data = np.tile(stack_of(np.uint16), (1, 18, 8))[:, :1100, :600]
    (path.parent / "in").mkdir()
    source = _stack_file(path.parent / "in", data, pixel=(0.5, 0.25))
    fuse_files(source, path, FuseOptions(method="argmax", tile=512))


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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fused.ome.tif", "in"]


def test_ome_zarr_output_has_a_pyramid_napari_opens(tmp_path):
    import zarr

    from napari_pdmfuse._reader import get_reader

    path = tmp_path / "fused.ome.zarr"
    stream_1100x600(path)
    group = zarr.open_group(str(path), mode="r")
    assert group.metadata.zarr_format == 3  # OME-Zarr 0.5 unless asked otherwise
    image = group.attrs["ome"]["multiscales"][0]
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
    monkeypatch.setattr(atomic, "pid_alive", lambda pid: pid != dead)

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
    monkeypatch.setattr(atomic, "pid_alive", lambda pid: False)
    fuse_files(_stack_file(tmp_path), tmp_path / "f.tif", ARGMAX)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.tif", "stack.tif"]


def _annotation(path) -> dict[str, str]:
    """The key-value pairs an OME-TIFF records for Fiji, QuPath and OMERO (its OME-XML checked
    against the OME schema first)."""
    import ome_types

    with tifffile.TiffFile(path) as tif:
        ome = ome_types.from_xml(tif.ome_metadata, validate=True)
    (annotation,) = ome.structured_annotations.map_annotations
    return dict(annotation.value)


def test_every_output_records_how_it_was_made(tmp_path):
    """Fused image, focus map and confidence, one format each, carry the method, the shipped
    weights' SHA-256 (from their card) and the package version."""
    import json

    import zarr

    from napari_pdmfuse.model.weights import CARD_PATH

    source = _stack_file(tmp_path)
    outputs = Outputs(
        tmp_path / "fused.ome.tif", tmp_path / "focus.ome.zarr", tmp_path / "confidence.tif"
    )
    fuse_files(source, outputs, FuseOptions(method="pdmnet", device="cpu"))
    made = {"software": "napari-pdmfuse", "version": __version__, "method": "pdmnet"}
    made["weights_sha256"] = json.loads(CARD_PATH.read_text())["sha256"]
    assert _annotation(outputs.fused) == made
    attrs = zarr.open_group(str(outputs.focus_map), mode="r").attrs
    assert attrs["pdmfuse"] == {"values": "focus position", "unit": "slice", "fusion": made}
    with tifffile.TiffFile(outputs.confidence) as tif:
        assert (
            tif.is_imagej
            and tif.imagej_metadata["Properties"]["weights_sha256"] == made["weights_sha256"]
        )
        assert "method: pdmnet" in tif.imagej_metadata["Info"]


def test_user_weights_are_recorded_by_their_own_sha256(tmp_path):
    import hashlib

    from napari_pdmfuse.model.pdmnet import PDMNet
    from napari_pdmfuse.model.weights import save_weights

    weights = tmp_path / "mine.pt"
    save_weights(PDMNet((4, 8)), weights, {})
    options = FuseOptions(method="pdmnet", device="cpu", weights=str(weights))
    out = tmp_path / "fused.ome.tif"
    fuse_files(_stack_file(tmp_path), out, options)
    assert _annotation(out)["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_fusion_choices_are_recorded_beside_the_method(tmp_path):
    out = tmp_path / "fused.ome.tif"
    options = FuseOptions(method="argmax", align="translation", correct_brightness=True)
    fuse_files(_stack_file(tmp_path), out, options)
    pairs = _annotation(out)
    assert pairs["method"] == "argmax" and "weights_sha256" not in pairs
    assert (pairs["align"], pairs["correct_brightness"]) == ("translation", "yes")


def _timelapse(folder):
    """A 2-time-point, 2-channel ImageJ hyperstack with named channels and 0.5 × 0.25 µm pixels."""
    planes = stack_of(np.uint16)  # Z Y X
    data = np.stack([np.stack([planes, planes // 2], axis=1)] * 2)  # T Z C Y X
    path = folder / "timelapse.tif"
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(4, 2),
        metadata={"axes": "TZCYX", "unit": "um", "Labels": ["DAPI", "GFP"] * 6},
    )
    return path


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_ome_zarr_outputs_validate_and_read_back(tmp_path, version):
    """Both OME-Zarr versions pass ome-zarr-models' validation, with the channel names, and
    read back through open_image with their pixels, names and pixel size."""
    import zarr
    from ome_zarr_models.v04 import Image as Image04
    from ome_zarr_models.v05 import Image as Image05

    out = tmp_path / "fused.ome.zarr"
    fuse_files(_timelapse(tmp_path), out, ARGMAX, ome_zarr_version=version)
    group = zarr.open_group(str(out), mode="r")
    if version == "0.5":
        model = Image05.from_zarr(group)
        omero = model.ome_attributes.model_extra["omero"]
        labels = [c["label"] for c in omero["channels"]]
    else:
        model = Image04.from_zarr(group)
        labels = [c.label for c in model.attributes.omero.channels]
    assert labels == ["DAPI", "GFP"]
    assert [a.name for a in model.ome_attributes.multiscales[0].axes] == list("tcyx")
    image = open_image([out], axes="ZCYX")  # its time points read as planes
    assert image.data.shape == (2, 2, 64, 80) and image.data.dtype == np.uint16
    assert image.channel_names == ("DAPI", "GFP")
    assert (image.pixel_size, image.unit) == ((0.5, 0.25), "um")
    np.testing.assert_array_equal(np.asarray(image.data[0]), group["0"][1])


def test_cli_writes_the_ome_zarr_version_asked_for(tmp_path, capsys):
    import zarr

    source = _stack_file(tmp_path)
    for version, zarr_format in (("0.4", 2), ("0.5", 3)):
        out = tmp_path / f"v{version}.ome.zarr"
        args = ["fuse", source, "-o", out, "--method", "argmax", "-q"]
        assert main([str(a) for a in [*args, "--ome-zarr-version", version]]) == 0
        assert zarr.open_group(str(out), mode="r").metadata.zarr_format == zarr_format
    bad = ["fuse", source, "-o", tmp_path / "x.ome.zarr", "--ome-zarr-version", "3"]
    assert main([str(a) for a in bad]) == 2
    assert "'3' is not a version of OME-Zarr; choose one of 0.5, 0.4" in capsys.readouterr().err


def test_the_maps_alone_can_be_written(tmp_path):
    """The viewer may ask for a focus map without the fused image."""
    import zarr

    from napari_pdmfuse import fuse
    from napari_pdmfuse.planning import plan_job
    from napari_pdmfuse.reading import open_image

    source = _stack_file(tmp_path)
    job = plan_job(open_image([source]), FuseOptions(method="argmax", tile=32))
    sink = FileOutputs(job, {"focus_map": tmp_path / "focus.ome.zarr"})
    for _ in job.run(sink):
        pass
    sink.finish()
    sink.close()
    focus = zarr.open_group(str(tmp_path / "focus.ome.zarr"), mode="r")["0"][...]
    expected = fuse(tifffile.imread(source), method="argmax", tile=32).focus_map
    np.testing.assert_array_equal(focus, expected)


def test_the_recorded_z_step_is_the_one_the_map_was_scaled_by(tmp_path):
    """With --focus-units um and no --z-spacing, the file's own Z step scales the map, and the
    outputs record that step."""
    import zarr

    source = tmp_path / "stack.tif"
    tifffile.imwrite(source, stack_of(np.uint16), imagej=True, metadata={"axes": "ZYX",
                     "spacing": 2.5, "unit": "um"})  # fmt: skip
    out = tmp_path / "focus.ome.zarr"
    fuse_files(source, Outputs(tmp_path / "f.tif", focus_map=out),
               FuseOptions(method="argmax", focus_units="um"))  # fmt: skip
    attrs = zarr.open_group(str(out), mode="r").attrs
    assert attrs["pdmfuse"]["unit"] == "micrometer"
    assert attrs["pdmfuse"]["fusion"]["z_spacing_um"] == "2.5"
