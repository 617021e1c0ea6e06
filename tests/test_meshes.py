"""3-D models: glTF, PLY and STL read back with trimesh, in µm, textured, printable."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import trimesh

from napari_pdmfuse import FusionResult, OutputError, fuse, write_mesh
from napari_pdmfuse.cli import main
from napari_pdmfuse.meshes import MESH_SIDE, TEXTURE_SIDE, ReliefSampler, Units, model_bytes

PIXEL, STEP = 0.5, 2.0  # µm per pixel, µm between planes


@pytest.fixture(scope="module")
def result() -> FusionResult:
    """A small RGB fusion: 60 × 90 px, 4 planes."""
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 255, (4, 60, 90, 3), dtype=np.uint8)
    return fuse(stack, method="argmax")


def texture_of(mesh: trimesh.Trimesh) -> np.ndarray:
    material = mesh.visual.material
    image = getattr(material, "baseColorTexture", None) or material.image  # glTF, PLY
    return np.asarray(image.convert("RGB"))


def test_glb_is_textured_and_in_micrometres(result, tmp_path):
    (path,) = write_mesh(tmp_path / "model.glb", result, pixel_size=PIXEL, z_step=STEP)

    mesh = trimesh.load(path, force="mesh")
    assert len(mesh.vertices) == 60 * 90  # small images keep every pixel
    heights = result.focus_map.max() - result.focus_map.min()
    width, relief, depth = mesh.extents  # glTF: +Y up
    assert width == pytest.approx(89 * PIXEL) and depth == pytest.approx(59 * PIXEL)
    assert 0 < relief <= heights * STEP + 1e-4
    np.testing.assert_array_equal(texture_of(mesh), result.fused)  # 8-bit RGB as it is
    assert mesh.metadata["unit"] == "micrometre" and mesh.metadata["method"] == "argmax"


def test_ply_reads_back_with_its_texture(result, tmp_path):
    written = write_mesh(tmp_path / "model.ply", result, pixel_size=(PIXEL, 2 * PIXEL), z_step=STEP)

    assert written == [tmp_path / "model.ply", tmp_path / "model.png"]
    mesh = trimesh.load(written[0], force="mesh")
    assert len(mesh.vertices) == 60 * 90
    width, height, _ = mesh.extents  # PLY: +Z up
    assert width == pytest.approx(89 * 2 * PIXEL) and height == pytest.approx(59 * PIXEL)
    np.testing.assert_array_equal(texture_of(mesh), result.fused)
    corner = np.argmin(mesh.vertices[:, 0] - mesh.vertices[:, 1])  # top left: x 0, y 0
    u, v = mesh.visual.uv[corner]
    assert u == pytest.approx(0.5 / 90) and v == pytest.approx(1 - 0.5 / 60)


def test_stl_is_a_watertight_solid(result, tmp_path):
    (path,) = write_mesh(tmp_path / "model.stl", result, pixel_size=PIXEL, z_step=STEP)

    mesh = trimesh.load(path, force="mesh")
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.is_volume
    assert mesh.volume > 0
    assert mesh.extents[:2] == pytest.approx((89 * PIXEL, 59 * PIXEL))
    assert path.read_bytes()[:80].startswith(b"napari-pdmfuse height map; unit: micrometre")


def test_without_sizes_the_model_is_in_pixels(result, tmp_path):
    (path,) = write_mesh(tmp_path / "model.glb", result)
    mesh = trimesh.load(path, force="mesh")
    assert mesh.extents[0] == pytest.approx(89)
    assert mesh.metadata["unit"] == "pixels across, slices up"


def test_large_results_are_decimated_and_sampled_tile_by_tile():
    rng = np.random.default_rng(1)
    shape = (3000, 1000)
    focus = rng.uniform(0, 5, shape).astype(np.float32)
    confidence = rng.uniform(0, 1, shape).astype(np.float32)
    fused = rng.integers(0, 60000, (*shape, 1), dtype=np.uint16)
    whole, tiled = ReliefSampler(shape, rgb=False), ReliefSampler(shape, rgb=False)
    whole.add(slice(0, 3000), slice(0, 1000), fused, focus, confidence)
    for y in range(0, 3000, 700):  # tiles that cut across the blocks
        for x in range(0, 1000, 300):
            rows, cols = slice(y, min(y + 700, 3000)), slice(x, min(x + 300, 1000))
            tiled.add(rows, cols, fused[rows, cols], focus[rows, cols], confidence[rows, cols])
    a, b = whole.relief(), tiled.relief()
    np.testing.assert_allclose(b.focus, a.focus, rtol=1e-5)
    np.testing.assert_allclose(b.image, a.image, rtol=1e-5)

    assert max(a.image.shape) <= TEXTURE_SIDE
    files = model_bytes(a, Units(None, None), ".glb")
    mesh = trimesh.load(trimesh.util.wrap_as_stream(files["model"]), file_type="glb", force="mesh")
    assert len(mesh.vertices) <= MESH_SIDE**2
    assert len(mesh.faces) < 2 * MESH_SIDE**2
    assert mesh.extents[2] == pytest.approx(3000, rel=0.01)  # still the whole image


def test_command_line_writes_a_model_in_micrometres_from_the_file(tmp_path, capsys):
    stack = np.random.default_rng(2).integers(0, 4000, (4, 64, 80), dtype=np.uint16)
    tifffile.imwrite(
        tmp_path / "stack.tif",
        stack,
        imagej=True,
        resolution=(1 / PIXEL, 1 / PIXEL),
        metadata={"axes": "ZYX", "spacing": STEP, "unit": "um"},
    )
    code = main(
        ["fuse", str(tmp_path / "stack.tif"), "-o", str(tmp_path / "fused.tif"), "--method",
         "argmax", "--mesh", str(tmp_path / "model.stl")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0 and "model.stl" in err
    mesh = trimesh.load(tmp_path / "model.stl", force="mesh")
    assert mesh.is_watertight
    assert mesh.extents[:2] == pytest.approx((79 * PIXEL, 63 * PIXEL))

    code = main(
        ["fuse", str(tmp_path / "stack.tif"), "-o", str(tmp_path / "again.tif"), "--method",
         "argmax", "--mesh", str(tmp_path / "model.obj")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "is not named .glb, .ply or .stl" in err
    assert not (tmp_path / "again.tif").exists()


def test_refusals(result, tmp_path):
    with pytest.raises(OutputError, match=r"not named \.glb, \.ply or \.stl"):
        write_mesh(tmp_path / "model.obj", result)
    write_mesh(tmp_path / "model.glb", result)
    with pytest.raises(OutputError, match="already exists"):
        write_mesh(tmp_path / "model.glb", result)
    lapse = fuse(
        np.random.default_rng(3).integers(0, 255, (2, 3, 32, 32), dtype=np.uint8),
        axes="TZYX",
        method="argmax",
    )
    with pytest.raises(Exception, match="one focus map"):
        write_mesh(tmp_path / "lapse.glb", lapse)
