"""OME-Zarr HCS plates: every field of every well fused, into plates of the same layout that
ome-zarr-models validates, the same on a dask cluster as on this machine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

import napari_pdmfuse
from napari_pdmfuse import FuseOptions, fuse_files
from napari_pdmfuse.cli import main
from napari_pdmfuse.errors import OutputError

hcs04 = pytest.importorskip("ome_zarr_models.v04.hcs")
hcs05 = pytest.importorskip("ome_zarr_models.v05.hcs")

ARGMAX = FuseOptions(method="argmax")
WELLS = ("A/1", "A/2", "B/1")


def field(well: str, index: int) -> np.ndarray:
    seed = WELLS.index(well) * 10 + index
    return np.random.default_rng(seed).integers(0, 4000, (4, 32, 40), dtype=np.uint16)


def write_plate(path: Path) -> Path:
    """A plate (NGFF 0.4) of three wells with two fields each, every field a focus stack."""
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    root.attrs["plate"] = {
        "version": "0.4",
        "name": "screen 7",
        "rows": [{"name": "A"}, {"name": "B"}],
        "columns": [{"name": "1"}, {"name": "2"}],
        "wells": [
            {"path": w, "rowIndex": "AB".index(w[0]), "columnIndex": int(w[2]) - 1} for w in WELLS
        ],
        "acquisitions": [{"id": 0, "name": "run"}],
        "field_count": 2,
    }
    axes = [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
    for well in WELLS:
        group = root.require_group(well)
        images = [{"path": str(i), "acquisition": 0} for i in range(2)]
        group.attrs["well"] = {"version": "0.4", "images": images}
        for index in range(2):
            image = group.create_group(str(index))
            data = field(well, index)
            image.create_array("0", shape=data.shape, dtype=data.dtype)[...] = data
            scale = [{"type": "scale", "scale": [1.5, 0.25, 0.25]}]
            datasets = [{"path": "0", "coordinateTransformations": scale}]
            image.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": datasets}]
    hcs04.HCS.from_zarr(zarr.open_group(str(path), mode="r"))  # a valid plate to start from
    return path


def alone(tmp_path: Path, plate: Path, index: int) -> np.ndarray:
    out = tmp_path / f"field{index}.tif"
    fuse_files(plate, out, ARGMAX, scene=index)
    return tifffile.imread(out)


@pytest.fixture
def plate(tmp_path) -> Path:
    return write_plate(tmp_path / "screen.ome.zarr")


def test_a_plate_fuses_into_a_plate_of_the_same_layout(plate, tmp_path, capsys):
    fused, focus = tmp_path / "fused.ome.zarr", tmp_path / "focus.ome.zarr"
    args = ["fuse", plate, "-o", fused, "--focus-map", focus, "--method", "argmax", "-q"]
    assert main([str(a) for a in args]) == 0

    source = zarr.open_group(str(plate), mode="r").attrs["plate"]
    for store in (fused, focus):
        model = hcs05.HCS.from_zarr(zarr.open_group(str(store), mode="r"))  # validates
        layout = zarr.open_group(str(store), mode="r").attrs["ome"]["plate"]
        assert layout == {k: v for k, v in source.items() if k != "version"}
        assert len(model.ome_attributes.plate.wells) == 3
    index = 0
    for well in WELLS:
        for number in range(2):
            group = zarr.open_group(str(fused / well / str(number)), mode="r")
            np.testing.assert_array_equal(group["0"][...], alone(tmp_path, plate, index))
            name = group.attrs["ome"]["multiscales"][0]["name"]
            assert name == f"{well.replace('/', '')} field {number}"
            assert zarr.open_group(str(focus / well / str(number)), mode="r")["0"].shape == (
                32,
                40,
            )
            index += 1
    metadata = zarr.open_group(str(fused / "A/1/0"), mode="r").attrs["ome"]["multiscales"][0]
    assert metadata["datasets"][0]["coordinateTransformations"][0]["scale"] == [0.25, 0.25]


def test_a_plate_s_fields_are_scenes(plate, tmp_path, capsys):
    labels = [s.label for s in napari_pdmfuse.scenes(plate)]
    assert labels == [f"{w.replace('/', '')}_field_{i}" for w in WELLS for i in range(2)]
    out = tmp_path / "out"
    code = main(["batch", str(plate), "--out-dir", str(out), "--method", "argmax", "-q"])
    assert code == 0
    assert len(list(out.iterdir())) == 6
    np.testing.assert_array_equal(
        tifffile.imread(out / "screen_B1_field_1_fused.tif"), alone(tmp_path, plate, 5)
    )


def test_a_plate_is_written_as_ome_zarr_only(plate, tmp_path):
    with pytest.raises(OutputError, match=r"is not named \.ome\.zarr; a plate is written as"):
        napari_pdmfuse.fuse_plate(plate, tmp_path / "fused.tif", ARGMAX)
    assert not (tmp_path / "fused.tif").exists()


@pytest.mark.slow
def test_a_plate_fused_on_a_dask_cluster_equals_the_local_one(plate, tmp_path):
    distributed = pytest.importorskip("distributed")
    local = tmp_path / "local.ome.zarr"
    napari_pdmfuse.fuse_plate(plate, local, ARGMAX)
    remote = tmp_path / "remote.ome.zarr"
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        napari_pdmfuse.fuse_plate(plate, remote, ARGMAX, client=client)
    for well in WELLS:
        for number in range(2):
            key = f"{well}/{number}/0"
            np.testing.assert_array_equal(
                zarr.open_group(str(remote), mode="r")[key][...],
                zarr.open_group(str(local), mode="r")[key][...],
            )
    hcs05.HCS.from_zarr(zarr.open_group(str(remote), mode="r"))


def test_a_plate_is_written_as_ngff_0_4_when_asked(plate, tmp_path):
    fused = tmp_path / "fused.ome.zarr"
    napari_pdmfuse.fuse_plate(plate, fused, ARGMAX, ome_zarr_version="0.4")
    group = zarr.open_group(str(fused), mode="r")
    hcs04.HCS.from_zarr(group)
    assert group.attrs["plate"]["version"] == "0.4"
    assert group["B/1"].attrs["well"] == {
        "version": "0.4",
        "images": [{"path": "0", "acquisition": 0}, {"path": "1", "acquisition": 0}],
    }
    from napari_pdmfuse._reader import get_reader

    names = [kwargs["name"] for _, kwargs, _ in get_reader(str(fused))(str(fused))]
    assert names[:2] == ["fused [A1 field 0]", "fused [A1 field 1]"] and len(names) == 6
