"""Retouch masks: planes and other fusions under the labels, the same from every way in.

The fusions run argmax (and wavelet as the other fusion) on small rendered stacks, so the
whole module takes a few seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from napari_pdmfuse import FuseOptions, InputError, ReadError, fuse, fuse_files
from napari_pdmfuse.cli import main
from napari_pdmfuse.retouch import (
    MASK_KEY,
    OtherFusion,
    RetouchMask,
    read_mask,
    write_mask,
)
from napari_pdmfuse.training import rendering as render


@pytest.fixture(scope="module")
def stack() -> np.ndarray:
    """A (5, 96, 128) uint16 rendered stack."""
    planes = render.random_stack(np.random.default_rng(3), (96, 128), n_slices=5, rgb=False).stack
    return (planes.astype(np.float64) / planes.max() * 60_000).astype(np.uint16)


def painted(shape=(96, 128)) -> np.ndarray:
    """Plane 2 in one rectangle, plane 5 in a disc, label 6 (another fusion) in a third place."""
    mask = np.zeros(shape, np.uint8)
    mask[10:30, 12:50] = 2
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask[(yy - 60) ** 2 + (xx - 30) ** 2 < 12**2] = 5
    mask[50:90, 80:120] = 6
    return mask


def test_planes_and_another_fusion_replace_pixels_and_focus_under_the_labels(stack):
    mask = painted()
    plain = fuse(stack, method="argmax")
    wavelet = fuse(stack, method="wavelet")

    result = fuse(stack, method="argmax", retouch=RetouchMask(mask, {6: "wavelet"}))

    for k in (2, 5):
        under = mask == k
        np.testing.assert_array_equal(result.fused[under], stack[k - 1][under])
        assert (result.focus_map[under] == k - 1).all()
    other = mask == 6
    np.testing.assert_array_equal(result.fused[other], wavelet.fused[other])
    np.testing.assert_array_equal(result.focus_map[other], wavelet.focus_map[other])
    kept = mask == 0
    np.testing.assert_array_equal(result.fused[kept], plain.fused[kept])
    np.testing.assert_array_equal(result.focus_map[kept], plain.focus_map[kept])
    np.testing.assert_array_equal(result.confidence, plain.confidence)  # the stack's, as it was
    assert result.fused.dtype == np.uint16


def test_focus_in_micrometres_and_rgb(stack):
    rgb = np.stack([stack, stack // 2, stack // 3], axis=-1)
    mask = painted()
    result = fuse(rgb, method="argmax", z_spacing=0.5, retouch=RetouchMask(mask, {6: "wavelet"}))
    wavelet = fuse(rgb, method="wavelet", z_spacing=0.5)

    under = mask == 5
    assert (result.focus_map[under] == np.float32(4) * np.float32(0.5)).all()
    np.testing.assert_array_equal(result.fused[under], rgb[4][under])
    np.testing.assert_array_equal(result.focus_map[mask == 6], wavelet.focus_map[mask == 6])


def test_tiles_give_the_whole_image_result_with_brightness_matching(stack):
    mask = RetouchMask(painted(), {6: "wavelet"}, match_brightness=True)
    whole = fuse(stack, method="argmax", retouch=mask)
    tiled = fuse(stack, method="argmax", tile=32, retouch=mask)
    np.testing.assert_array_equal(tiled.fused, whole.fused)
    np.testing.assert_array_equal(tiled.focus_map, whole.focus_map)


def test_brightness_matching_evens_out_a_flickering_plane():
    # Four sharp planes and a blurred one taken with a brighter lamp: the fusion takes the
    # sharp planes, and a region painted from the bright plane stands out unless matched.
    rng = np.random.default_rng(5)
    sharp = ndimage.gaussian_filter(rng.uniform(1000, 3000, (96, 128)), 1.0)
    bright = 1.5 * ndimage.gaussian_filter(sharp, 3.0)
    stack = np.stack([sharp, bright, sharp, sharp, sharp]).astype(np.float32)
    mask = np.zeros(stack.shape[1:], np.uint8)
    mask[30:60, 40:80] = 2
    under = mask == 2

    taken = fuse(stack, method="argmax", retouch=mask)
    matched = fuse(stack, method="argmax", retouch=RetouchMask(mask, match_brightness=True))

    around = sharp[under].mean()
    assert taken.fused[under].mean() == pytest.approx(1.5 * around, rel=0.01)
    assert matched.fused[under].mean() == pytest.approx(around, rel=0.01)
    np.testing.assert_array_equal(matched.fused[~under], taken.fused[~under])


def test_mask_file_round_trip_and_napari_labels(stack, tmp_path):
    mask = RetouchMask(painted(), {6: OtherFusion("wavelet")}, match_brightness=True, planes=5)
    path = write_mask(tmp_path / "mask.tif", mask)

    again = read_mask(path)
    np.testing.assert_array_equal(again.labels, mask.labels)
    assert again.labels.dtype == np.uint8
    assert again.sources == {6: OtherFusion("wavelet")} and again.match_brightness
    assert again.planes == 5 and again.sha256() == mask.sha256()
    with tifffile.TiffFile(path) as tif:  # the sources travel in the TIFF's JSON description
        assert tif.shaped_metadata[0][MASK_KEY]["sources"] == {"6": "wavelet"}

    # napari saves a Labels layer as a 32-bit TIFF without our metadata: planes still work
    planes_only = np.where(mask.labels == 6, 0, mask.labels).astype(np.uint32)
    tifffile.imwrite(tmp_path / "napari.tif", planes_only)
    result = fuse(stack, method="argmax", retouch=tmp_path / "napari.tif")
    np.testing.assert_array_equal(result.fused[planes_only == 2], stack[1][planes_only == 2])
    assert OtherFusion.parse("pdmnet hard") == OtherFusion("pdmnet", "hard")


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (RetouchMask(np.full((96, 128), 7, np.uint8)), "has label 7 but the stack has only 5"),
        (RetouchMask(np.zeros((96, 127), np.uint8)), "is 96×127 px but the result"),
        (
            RetouchMask(np.zeros((96, 128), np.uint8), {3: "wavelet"}),
            "under label 3, which is plane",
        ),
        (RetouchMask(np.zeros((96, 128), np.uint8), planes=4), "made for a stack of 4 planes"),
    ],
)
def test_masks_that_do_not_fit_are_refused_in_one_sentence(stack, mask, message):
    with pytest.raises(InputError, match=message):
        fuse(stack, method="argmax", retouch=mask)


def test_bad_masks_and_sources_are_refused():
    with pytest.raises(InputError, match="not a label image"):
        RetouchMask(np.zeros((4, 4), np.float32))
    with pytest.raises(InputError, match="not a method"):
        OtherFusion("enfuse")
    with pytest.raises(InputError, match="pdmnet method only"):
        OtherFusion("wavelet", "hard")
    with pytest.raises(ReadError, match="does not exist"):
        FuseOptions(retouch="missing.tif")


def test_command_line_and_streamed_outputs_apply_the_mask(stack, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "stack.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    mask = RetouchMask(painted(), {6: "wavelet"}, match_brightness=True)
    write_mask(tmp_path / "mask.tif", mask)
    expected = fuse(stack, method="argmax", retouch=mask)

    code = main(
        ["fuse", str(tmp_path / "stack.tif"), "-o", str(tmp_path / "fused.tif"), "--focus-map",
         str(tmp_path / "focus.tif"), "--method", "argmax", "--retouch",
         str(tmp_path / "mask.tif"), "-q"]
    )  # fmt: skip

    assert code == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "fused.tif"), expected.fused)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "focus.tif"), expected.focus_map)
    with tifffile.TiffFile(tmp_path / "fused.tif") as tif:
        record = tif.imagej_metadata["Properties"]
    assert record["retouch_mask"] == str(tmp_path / "mask.tif")
    assert record["retouch_sources"] == "6: wavelet"
    assert record["retouch_match_brightness"] == "yes"
    assert record["retouch_sha256"] == mask.sha256()

    # The same through the streamed OME-Zarr writer, tile by tile
    zarr_out = tmp_path / "fused.ome.zarr"
    fuse_files(
        tmp_path / "stack.tif", zarr_out, FuseOptions(method="argmax", tile=48, retouch=mask)
    )
    import zarr

    np.testing.assert_array_equal(zarr.open_group(str(zarr_out))["0"][:], expected.fused)


def test_command_line_refuses_a_mask_that_does_not_fit(stack, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "stack.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "mask.tif", np.full((96, 128), 9, np.uint32))
    code = main(
        ["fuse", str(tmp_path / "stack.tif"), "-o", str(tmp_path / "fused.tif"), "--method",
         "argmax", "--retouch", str(tmp_path / "mask.tif"), "-q"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "has label 9 but the stack has only 5 planes" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "fused.tif").exists()


def test_a_session_updates_only_where_labels_change(stack):
    from napari_pdmfuse.reading import Image
    from napari_pdmfuse.viewer.jobs import Run, fuse_run
    from napari_pdmfuse.viewer.retouching import RetouchSession
    from napari_pdmfuse.viewer.sources import Source

    source = Source("stack", False, 5, (1.0, 1.0), (0.0, 0.0), (0.0, 60000.0), "gray")
    gen = fuse_run(Run(Image(stack, "ZYX"), FuseOptions(method="argmax"), source))
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            outcome = stop.value
            break
    original = outcome.result.fused.copy()
    session = RetouchSession(outcome)

    session.labels[40:50, 60:70] = 3
    window = session.sync()  # nothing tracked yet: a window must be named
    assert window is None
    assert session.sync((slice(32, 64), slice(50, 90))) == (slice(40, 50), slice(60, 70))
    np.testing.assert_array_equal(outcome.result.fused[40:50, 60:70], stack[2, 40:50, 60:70])
    assert (outcome.result.focus_map[40:50, 60:70] == 2).all()

    session.labels[40:50, 60:70] = 0  # erased (as an undo does): found in the painted blocks
    assert session.sync() == (slice(40, 50), slice(60, 70))
    np.testing.assert_array_equal(outcome.result.fused, original)

    session.labels[0:4, 0:4] = 99  # neither a plane nor one of the fusions
    with pytest.raises(InputError, match="Label 99 names no plane and no fusion"):
        session.sync((slice(0, 4), slice(0, 4)))
    session.labels[0:4, 0:4] = session.label_of(OtherFusion("wavelet"))
    with pytest.raises(InputError, match="takes the wavelet fusion, which has not been made"):
        session.sync((slice(0, 4), slice(0, 4)))
