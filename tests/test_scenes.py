"""Files holding several images (CZI scenes, multi-series OME-TIFF, OME-Zarr collections): every
scene fused into outputs named after it, from the command line, the API and napari's reader."""

from __future__ import annotations

import pickle
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

import napari_pdmfuse
from napari_pdmfuse import FuseOptions, Outputs, fuse_files
from napari_pdmfuse.cli import main
from napari_pdmfuse.errors import InputError, PdmFuseWarning
from napari_pdmfuse.reading import open_image

ARGMAX = FuseOptions(method="argmax")


def write_czi_scenes(path: Path, scenes: dict[str, np.ndarray], pixel_um=0.2, z_um=1.5) -> Path:
    """A CZI holding each (C, Z, Y, X) array of ``scenes`` as a scene of that name.

    pylibCZIrw writes the scenes' pixels but not their list in the metadata, which bioio reads
    them by; the metadata is therefore written again, with the list, as a new segment that the
    file header points to (the CZI layout: a ZISRAWMETADATA segment, its XML after 256 bytes).
    """
    pyczi = pytest.importorskip("pylibCZIrw.czi")
    with pyczi.create_czi(str(path), exist_ok=True) as czi:
        for s, data in enumerate(scenes.values()):
            for c, planes in enumerate(data):
                for z, plane in enumerate(planes):
                    czi.write(
                        plane, plane={"C": c, "Z": z, "T": 0}, scene=s, location=(s * 1000, 0)
                    )
        czi.write_metadata(
            channel_names={0: "DAPI", 1: "GFP"},
            scale_x=pixel_um * 1e-6,
            scale_y=pixel_um * 1e-6,
            scale_z=z_um * 1e-6,
        )
    with pyczi.open_czi(str(path)) as czi:
        xml = czi.raw_metadata
    listed = "".join(f'<Scene Index="{i}" Name="{name}"/>' for i, name in enumerate(scenes))
    xml = xml.replace("<Dimensions>", f"<Dimensions><S><Scenes>{listed}</Scenes></S>", 1).encode()
    blob = bytearray(path.read_bytes())
    body = struct.pack("<ii", len(xml), 0) + bytes(248) + xml
    body += bytes(-len(body) % 32)
    blob += bytes(-len(blob) % 32)  # segments start on 32-byte boundaries
    offset = len(blob)
    blob += b"ZISRAWMETADATA\0\0" + struct.pack("<qq", len(body), len(body)) + body
    blob[92:100] = struct.pack("<q", offset)  # the file header's MetadataPosition
    path.write_bytes(bytes(blob))
    return path


def planes(seed: int, shape=(2, 4, 40, 48)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, shape, dtype=np.uint16)


@pytest.fixture
def czi(tmp_path):
    pytest.importorskip("bioio_czi")
    return write_czi_scenes(tmp_path / "plate.czi", {"A1": planes(1), "B2": planes(2)})


def alone(tmp_path: Path, data: np.ndarray, name: str) -> np.ndarray:
    """``data`` (C, Z, Y, X) fused on its own, from an ImageJ hyperstack."""
    path = tmp_path / f"{name}.tif"
    tifffile.imwrite(path, data.transpose(1, 0, 2, 3), imagej=True, metadata={"axes": "ZCYX"})
    fuse_files(path, tmp_path / f"{name}_alone.tif", ARGMAX)
    return tifffile.imread(tmp_path / f"{name}_alone.tif")


def test_every_scene_of_a_czi_is_fused_and_reads_back_with_bioio(czi, tmp_path, capsys):
    bioio = pytest.importorskip("bioio")
    reader = pytest.importorskip("bioio_ome_zarr").Reader
    out = tmp_path / "out"
    out.mkdir()
    args = ["fuse", czi, "-o", out / "fused.ome.zarr", "--focus-map", out / "focus.tif"]
    assert main([str(a) for a in [*args, "--method", "argmax", "-q"]]) == 0
    assert capsys.readouterr().err == ""

    assert sorted(p.name for p in out.iterdir()) == [
        "focus_A1.tif",
        "focus_B2.tif",
        "fused_A1.ome.zarr",
        "fused_B2.ome.zarr",
    ]
    for name, seed in (("A1", 1), ("B2", 2)):
        image = bioio.BioImage(out / f"fused_{name}.ome.zarr", reader=reader)
        fused = image.get_image_data("CYX")
        np.testing.assert_array_equal(fused, alone(tmp_path, planes(seed), name))
        assert list(image.channel_names) == ["DAPI", "GFP"]
        assert image.physical_pixel_sizes[2] == pytest.approx(0.2)  # Z, Y, X
        assert tifffile.imread(out / f"focus_{name}.tif").shape == (40, 48)


def test_one_scene_picked_keeps_the_names_given(czi, tmp_path, capsys):
    out = tmp_path / "fused.tif"
    assert main(["fuse", str(czi), "-o", str(out), "--scene", "1", "--method", "argmax"]) == 0
    assert "fused B2, " not in capsys.readouterr().err
    np.testing.assert_array_equal(tifffile.imread(out), alone(tmp_path, planes(2), "B2"))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("fused")) == ["fused.tif"]


def test_a_batch_fuses_each_scene_and_refuses_a_missing_one(czi, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["batch", str(czi), "--out-dir", str(out), "--method", "argmax", "-q"]
    assert main([*base, "--scene", "B2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["plate_B2_fused.tif"]

    assert main(base) == 0  # the rest: B2 is kept, A1 fused
    assert sorted(p.name for p in out.iterdir()) == ["plate_A1_fused.tif", "plate_B2_fused.tif"]
    capsys.readouterr()

    assert main([*base, "--scene", "C3"]) == 2
    assert capsys.readouterr().err.splitlines()[0] == (
        f"pdmfuse: error: {czi} has no scene 'C3'; its scenes are 0 (A1), 1 (B2), so pick one "
        "of them by name or number (from 0)."
    )


def test_the_api_lists_picks_and_fuses_scenes(czi, tmp_path):
    listed = napari_pdmfuse.scenes(czi)
    assert [(s.index, s.name, s.label) for s in listed] == [(0, "A1", "A1"), (1, "B2", "B2")]

    fuse_files(czi, tmp_path / "b2.tif", ARGMAX, scene="B2")
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "b2.tif"), alone(tmp_path, planes(2), "B2")
    )
    written = napari_pdmfuse.fuse_scenes(czi, Outputs(tmp_path / "all.tif"), ARGMAX)
    assert [w.paths[0].name for w in written] == ["all_A1.tif", "all_B2.tif"]
    with pytest.warns(PdmFuseWarning, match=r"holds 2 scenes and only the first \(A1\) is read"):
        image = open_image([czi])
    assert image.name == "A1"
    with pytest.raises(InputError, match="has 2 scenes, so there is no scene 2"):
        open_image([czi], scene=2)


def test_a_later_scene_pickles_for_cluster_workers(czi, tmp_path):
    image = open_image([czi], scene=1)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(image.data)).compute(), planes(2))
    # A compressed OME-TIFF's later image is reopened as that image too.
    path = tmp_path / "series.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        for seed in (3, 4):
            tif.write(planes(seed, (4, 40, 48)), compression="zlib", metadata={"axes": "ZYX"})
    image = open_image([path], scene=1)
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(image.data)).compute(), planes(4, (4, 40, 48))
    )


def test_every_image_of_a_multi_series_ome_tiff_is_fused(tmp_path, capsys):
    path = tmp_path / "wells.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(planes(5, (4, 40, 48)), metadata={"axes": "ZYX", "Name": "well A/1"})
        tif.write(planes(6, (3, 40, 48)), metadata={"axes": "ZYX"})  # unnamed
    assert [(s.name, s.label) for s in napari_pdmfuse.scenes(path)] == [
        ("well A/1", "well_A_1"),
        (None, "scene1"),
    ]
    out = tmp_path / "out"
    code = main(["batch", str(path), "--out-dir", str(out), "--method", "argmax", "-q"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "wells_scene1_fused.tif",
        "wells_well_A_1_fused.tif",
    ]
    with tifffile.TiffFile(out / "wells_well_A_1_fused.tif") as tif:
        assert tif.imagej_metadata["Properties"]["Name"] == "well A/1"


def write_collection(path: Path, images: list[np.ndarray], names: list[str]) -> Path:
    """An OME-Zarr collection in the bioformats2raw layout (NGFF 0.4): image groups 0, 1, …
    and their names in OME/METADATA.ome.xml."""
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    root.attrs["bioformats2raw.layout"] = 3
    for index, data in enumerate(images):
        group = root.create_group(str(index))
        group.create_array("0", shape=data.shape, dtype=data.dtype)[...] = data
        axes = [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
        transform = [{"type": "scale", "scale": [2.0, 0.5, 0.5]}]
        dataset = {"path": "0", "coordinateTransformations": transform}
        group.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": [dataset]}]
    root.create_group("OME").attrs["series"] = [str(i) for i in range(len(images))]
    listed = "".join(f'<Image ID="Image:{i}" Name="{n}"/>' for i, n in enumerate(names))
    xml = f'<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">{listed}</OME>'
    (path / "OME" / "METADATA.ome.xml").write_text(xml)
    return path


def test_every_image_of_an_ome_zarr_collection_is_fused(tmp_path, capsys):
    images = [planes(7, (4, 40, 48)), planes(8, (5, 40, 48))]
    store = write_collection(tmp_path / "run.ome.zarr", images, ["pos 1", "pos 2"])
    out = tmp_path / "fused.tif"
    assert main(["fuse", str(store), "-o", str(out), "--method", "argmax", "-q"]) == 0
    for name, data in (("pos_1", images[0]), ("pos_2", images[1])):
        source = tmp_path / f"{name}.tif"
        tifffile.imwrite(source, data, imagej=True, metadata={"axes": "ZYX"})
        fuse_files(source, tmp_path / f"{name}_alone.tif", ARGMAX)
        np.testing.assert_array_equal(
            tifffile.imread(tmp_path / f"fused_{name}.tif"),
            tifffile.imread(tmp_path / f"{name}_alone.tif"),
        )
    image = open_image([store], scene=1)
    assert (image.name, image.z_spacing, image.sources) == ("pos 2", 2.0, (store,))


def test_napari_opens_a_layer_per_scene(czi, tmp_path):
    from napari_pdmfuse._reader import get_reader

    with warnings.catch_warnings():
        warnings.simplefilter("error", PdmFuseWarning)  # every scene read on purpose
        layers = get_reader(str(czi))(str(czi))
    assert [kwargs["name"] for _, kwargs, _ in layers] == ["plate [A1]", "plate [B2]"]
    np.testing.assert_array_equal(np.asarray(layers[1][0]), planes(2).transpose(1, 0, 2, 3))
    store = write_collection(tmp_path / "c.ome.zarr", [planes(7, (4, 40, 48))] * 2, ["a", "b"])
    names = [kwargs["name"] for _, kwargs, _ in get_reader(str(store))(str(store))]
    assert names == ["c [a]", "c [b]"]
