"""PDMNet's hard selection: every fused pixel copied untouched from its highest-weight slice.

The blend (the default) mixes slices by their softmax weights; the hard selection must give
values the stack holds, exactly, through every way in: the Python API, the command line (fuse
and batch), the options a cluster task carries, the recorded metadata and the widget.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage

from napari_pdmfuse import FuseOptions, InputError, fuse
from napari_pdmfuse.cli import main
from napari_pdmfuse.cli.arguments import build_parser, fuse_options
from napari_pdmfuse.methods import SELECTIONS, build_counts, cached_method
from napari_pdmfuse.methods.pdmnet import StreamingArgmax, StreamingSoftmax
from napari_pdmfuse.planning import plan_job
from napari_pdmfuse.training import rendering as render

HARD = {"method": "pdmnet", "device": "cpu", "selection": "hard"}


def uint16_stack(n: int = 5) -> np.ndarray:
    """A small rendered focus stack over most of the uint16 range, deterministic."""
    planes = render.random_stack(np.random.default_rng(1), (64, 80), n_slices=n).stack
    return (planes.astype(np.float64) / planes.max() * 60000).astype(np.uint16)


def half_and_half() -> np.ndarray:
    """Two planes of one texture: plane 1 sharp on the left half, plane 0 on the right."""
    rng = np.random.default_rng(0)
    texture = ndimage.gaussian_filter(rng.random((64, 96)), 1.0)
    sharp = (1000 + 40000 * (texture - texture.min()) / np.ptp(texture)).astype(np.uint16)
    blurred = ndimage.gaussian_filter(sharp.astype(np.float64), 3).round().astype(np.uint16)
    left = np.arange(96) < 48
    return np.stack([np.where(left, blurred, sharp), np.where(left, sharp, blurred)])


def from_the_stack(stack: np.ndarray, fused: np.ndarray) -> np.ndarray:
    """Per pixel, whether the fused value (all channels) is that of one of the slices."""
    same = stack == fused[None]
    return (same.all(axis=-1) if stack.ndim == 4 else same).any(axis=0)


# ---------------------------------------------------------------------------------------------
# The accumulator


def test_streaming_argmax_takes_the_best_slice_lowest_index_on_ties():
    logits = torch.tensor(np.random.default_rng(3).normal(size=(7, 5, 6)), dtype=torch.float32)
    logits[[1, 4, 6], 0, 0] = 9.0  # a tie within a chunk and across chunks: slice 1 wins
    logits[5, 0, 1] = logits[:, 0, 1].max()  # ties an earlier chunk's maximum: the earlier wins
    data = torch.arange(7 * 5 * 6 * 2, dtype=torch.float32).reshape(7, 5, 6, 2)
    run = StreamingArgmax()
    for i in range(0, 7, 3):  # chunks of 3, 3 and 1 slices
        run.add(logits[i : i + 3], data[i : i + 3])
    first = torch.argmax(logits, 0)  # the first maximum of all slices at once
    expected = data.gather(0, first[None, ..., None].expand(1, 5, 6, 2))[0]
    assert torch.equal(run.result(), expected)
    assert first[0, 0] == 1 and run.result()[0, 0, 0] == data[1, 0, 0, 0]


def test_streaming_argmax_is_the_limit_of_a_sharpening_softmax():
    logits = torch.tensor(np.random.default_rng(4).normal(size=(6, 8, 8)), dtype=torch.float64)
    data = torch.tensor(np.random.default_rng(5).random((6, 8, 8, 3)))
    hard, soft = StreamingArgmax(), StreamingSoftmax()
    for i in range(0, 6, 4):
        hard.add(logits[i : i + 4], data[i : i + 4])
        soft.add(1e6 * logits[i : i + 4], data[i : i + 4])
    torch.testing.assert_close(hard.result(), soft.result())


# ---------------------------------------------------------------------------------------------
# Fused values


def test_hard_fused_values_all_come_from_the_stack():
    stack = uint16_stack()
    hard = fuse(stack, **HARD)
    blend = fuse(stack, method="pdmnet", device="cpu")
    assert hard.fused.dtype == np.uint16 and hard.fused.shape == (64, 80)
    assert from_the_stack(stack, hard.fused).all()
    assert not from_the_stack(stack, blend.fused).all()  # the blend makes values of its own
    # Only the fused image changes: the focus map and confidence are the network's as before.
    np.testing.assert_array_equal(hard.focus_map, blend.focus_map)
    np.testing.assert_array_equal(hard.confidence, blend.confidence)


@pytest.mark.parametrize(
    ("dtype", "offset", "options"),
    [
        (np.float64, 0.1234567890123, {}),  # more digits than float32 holds
        (np.uint32, 4_000_000_000, {}),  # beyond float32's 2**24 consecutive integers
        (np.uint16, 0, {"correct_brightness": True}),  # gains decide, the values stay as read
    ],
    ids=["float64", "uint32 near 4e9", "brightness corrected"],
)
def test_hard_values_are_those_read_whatever_the_working_precision(dtype, offset, options):
    stack = uint16_stack().astype(dtype) + dtype(offset)
    fused = fuse(stack, **HARD, **options).fused
    assert fused.dtype == dtype
    assert from_the_stack(stack, fused).all()


def test_the_argmax_method_copies_values_as_read_too():
    stack = uint16_stack().astype(np.float64) + 0.1234567890123
    fused = fuse(stack, method="argmax").fused
    assert fused.dtype == np.float64 and from_the_stack(stack, fused).all()


def test_hard_rgb_keeps_each_pixels_colour_from_one_slice():
    planes = render.random_stack(np.random.default_rng(2), (48, 56), n_slices=4, rgb=True).stack
    fused = fuse(planes, **HARD).fused
    assert fused.dtype == planes.dtype and fused.shape == (48, 56, 3)
    assert from_the_stack(planes, fused).all()


def test_hard_copies_the_sharp_plane_exactly_away_from_the_boundary():
    stack = half_and_half()
    fused = fuse(stack, **HARD).fused
    np.testing.assert_array_equal(fused[:, :40], stack[1][:, :40])
    np.testing.assert_array_equal(fused[:, 56:], stack[0][:, 56:])
    blend = fuse(stack, method="pdmnet", device="cpu").fused
    assert not np.array_equal(blend[:, :40], stack[1][:, :40])


def test_hard_tiles_stitch_to_the_untiled_result():
    planes = render.random_stack(np.random.default_rng(6), (200, 230), n_slices=4).stack
    tiled, whole = fuse(planes, tile=96, **HARD).fused, fuse(planes, **HARD).fused
    assert from_the_stack(planes, tiled).all()
    # Logits move by float rounding between tilings, so a near tie may pick the other slice.
    assert (tiled == whole).mean() > 0.999


# ---------------------------------------------------------------------------------------------
# Options, refusals, command line, metadata, cluster tasks


def test_selection_choices_and_default():
    assert SELECTIONS == ("blend", "hard")
    assert FuseOptions().selection == "blend"
    with pytest.raises(InputError, match=r"^Unknown selection 'soft'; choose one of blend, hard\."):
        FuseOptions(selection="soft")


@pytest.mark.parametrize("method", ["wavelet", "pyramid", "argmax"])
def test_hard_selection_with_another_method_is_refused(method):
    with pytest.raises(InputError) as refused:
        FuseOptions(method=method, selection="hard")
    assert str(refused.value) == (
        f"The hard selection applies to the pdmnet method only, not to {method}, which picks "
        "or mixes slices its own way; choose pdmnet or the blend selection."
    )
    FuseOptions(method=method, selection="blend")  # the default is fine with every method


def test_the_method_is_built_per_selection():
    blend = cached_method("pdmnet", "cpu", None, "blend")
    hard = cached_method("pdmnet", "cpu", None, "hard")
    assert blend is not hard and hard is cached_method("pdmnet", "cpu", None, "hard")
    assert blend.accumulator is StreamingSoftmax and hard.accumulator is StreamingArgmax


@pytest.mark.parametrize("command", ["fuse", "batch"])
def test_cli_flag_sets_the_option(command):
    where = ["-o", "f.tif"] if command == "fuse" else ["--out-dir", "out"]
    args = build_parser().parse_args([command, "s.tif", *where, "--selection", "hard"])
    assert fuse_options(args).selection == "hard"
    args = build_parser().parse_args([command, "s.tif", *where])
    assert fuse_options(args).selection == "blend"


def test_cli_hard_round_trip_and_record(tmp_path, capsys):
    stack = uint16_stack()
    tifffile.imwrite(tmp_path / "stack.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    out = tmp_path / "fused.tif"

    code = main(
        ["fuse", str(tmp_path / "stack.tif"), "-o", str(out), "--selection", "hard",
         "--device", "cpu", "--quiet"]
    )  # fmt: skip

    assert code == 0 and capsys.readouterr().err == ""
    np.testing.assert_array_equal(tifffile.imread(out), fuse(stack, **HARD).fused)
    with tifffile.TiffFile(out) as tif:
        assert tif.imagej_metadata["Properties"]["selection"] == "hard"


def test_batch_hard_round_trip(tmp_path, capsys):
    stack = uint16_stack(3)
    tifffile.imwrite(tmp_path / "a.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    out = tmp_path / "out"

    code = main(
        ["batch", str(tmp_path / "a.tif"), "--out-dir", str(out), "--selection", "hard",
         "--device", "cpu", "--quiet"]
    )  # fmt: skip

    assert code == 0 and capsys.readouterr().err == ""
    np.testing.assert_array_equal(tifffile.imread(out / "a_fused.tif"), fuse(stack, **HARD).fused)


def test_cli_refuses_hard_with_another_method(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "stack.tif", uint16_stack(3))
    out = tmp_path / "fused.tif"
    args = ["fuse", str(tmp_path / "stack.tif"), "-o", str(out), "--method", "argmax"]
    code = main([*args, "--selection", "hard"])
    assert code == 2 and not out.exists()
    assert capsys.readouterr().err == (
        "pdmfuse: error: The hard selection applies to the pdmnet method only, not to argmax, "
        "which picks or mixes slices its own way; choose pdmnet or the blend selection.\n"
    )


def test_cluster_tasks_carry_the_selection():
    """What a cluster task is given builds the hard method on the worker and fuses as here."""
    from napari_pdmfuse import cluster
    from napari_pdmfuse.fusion import image_from_array

    class Inline:  # runs each task at once, in this process, as a worker would
        def scatter(self, data, **_):
            return data

        def submit(self, task, *args, **_):
            return args, task(*args)

    stack = uint16_stack(3)
    job = plan_job(image_from_array(stack), FuseOptions(**HARD))
    ((args, result), _, _, _), *_ = cluster._tasks(job, Inline(), "test")
    assert args[-1] == ("pdmnet", "cpu", None, "hard")
    assert from_the_stack(stack, result.fused[..., 0].astype(np.uint16)).all()


# ---------------------------------------------------------------------------------------------
# The widget


def test_widget_offers_the_selection_for_pdmnet(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-pdmfuse", "PDM Fuse")
    assert widget.selection.choices == SELECTIONS and widget.selection.value == "blend"
    assert widget.selection.enabled  # PDMNet is the default method
    layer = viewer.add_image(uint16_stack(3), name="stack")
    widget.image.value = layer
    widget.device.value = "cpu"
    widget.selection.value = "hard"
    assert widget.describe().options.selection == "hard"

    widget.method.value = "argmax"  # the choice is PDMNet's: greyed out, and not sent
    assert not widget.selection.enabled and widget.selection.value == "hard"
    assert widget.describe().options.selection == "blend"

    widget.method.value = "pdmnet"
    assert widget.selection.enabled
    widget.fuse_button.clicked()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    fused = viewer.layers["stack fused"].data
    np.testing.assert_array_equal(fused, fuse(layer.data, **HARD).fused)
    # The layers say how they were made, as the files' records do.
    assert viewer.layers["stack fused"].metadata["selection"] == "hard"
    # A second fusion with the same choices reuses the model the first one built.
    built = build_counts().get("pdmnet", 0)
    widget.fuse_button.clicked()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert build_counts().get("pdmnet", 0) == built
