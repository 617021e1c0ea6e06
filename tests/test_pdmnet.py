"""PDMNet: shapes for any N, proper weights, Z symmetry, tiling, and safe weight loading."""

from __future__ import annotations

import contextlib
import pickle

import numpy as np
import pytest
import torch
from test_focus_map import run_focus_reference

from napari_pdmfuse import InputError, fuse
from napari_pdmfuse.methods.pdmnet import PDMNetMethod
from napari_pdmfuse.model import fastops
from napari_pdmfuse.model.cost import multiply_adds_per_voxel
from napari_pdmfuse.model.pdmnet import (
    DEFAULT_WIDTHS,
    LIGHT_LOGIT_BOUND,
    LIGHT_WIDTHS,
    PDMNet,
    channels_last,
    upsample,
)
from napari_pdmfuse.model.weights import CARD_PATH, WEIGHTS_PATH, load_model, save_weights, sha256
from napari_pdmfuse.training import rendering as render
from napari_pdmfuse.training.rendering import demo_stack


@pytest.fixture(scope="module")
def method() -> PDMNetMethod:
    return PDMNetMethod(device="cpu")


@pytest.fixture(scope="module")
def head_weights(tmp_path_factory) -> str:
    """The shipped network with an (untrained, seeded) focus head, as training can add one."""
    torch.manual_seed(0)
    model = load_model()
    model.focus_head = PDMNet(model.widths, focus_head="coarse").focus_head
    path = tmp_path_factory.mktemp("weights") / "with-head.pt"
    design = {"light": model.light, "logit_bound": model.logit_bound}
    torch.save({"widths": list(model.widths), **design, "state": model.state_dict()}, path)
    return str(path)


@pytest.fixture(scope="module")
def with_focus_head(head_weights) -> PDMNetMethod:
    return PDMNetMethod(device="cpu", weights=head_weights)


@pytest.mark.parametrize("n_slices", [2, 3, 17])
@pytest.mark.parametrize("head", [False, True])
def test_streamed_fusion_equals_one_softmax_over_all_slices(
    method, with_focus_head, n_slices, head
):
    # 17 slices are decoded in several chunks, the last one partial
    fuser = with_focus_head if head else method
    rng = np.random.default_rng(n_slices)
    lum = rng.random((n_slices, 48, 64), dtype=np.float32)
    block = np.stack([lum * 100, 5 - 3 * lum], -1)
    with torch.inference_mode():
        logits, focus_logits = fuser.model(torch.from_numpy(lum)[None])
    weights = torch.softmax(logits, 1)[0].numpy()
    assert weights.shape == lum.shape
    assert weights.min() >= 0
    np.testing.assert_allclose(weights.sum(0), 1, atol=1e-5)
    # the shipped head and a coarse one: the focus map from their own logits, at half resolution
    assert focus_logits.shape == (1, n_slices, 24, 32)
    # read at that resolution, then upsampled like the logits
    read = np.stack(run_focus_reference(focus_logits[0].numpy()))
    focus, confidence = upsample(torch.from_numpy(read)[:, None])[:, 0].numpy()
    result = fuser.fuse_tile(block, lum)
    expected = np.einsum("zyx,zyxc->yxc", weights, block)
    # The logits of one forward pass and of inference in chunks differ by float rounding (the
    # convolutions' blocking depends on the batch): 1e-5 of the data range in the fused image,
    # which the run's soft end amplifies in the focus map, to 2e-4 of the slice range (the
    # reference itself is exact: test_focus_map).
    span = np.ptp(block, (0, 1, 2))  # per channel
    np.testing.assert_allclose(result.fused / span, expected / span, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.focus, focus, rtol=1e-5, atol=2e-4 * (n_slices - 1))
    np.testing.assert_allclose(result.confidence, confidence, rtol=1e-5, atol=1e-4)


def test_a_focus_head_leaves_the_fused_image_as_it_was(method, with_focus_head):
    r = demo_stack(6, 64, seed=5)
    lum = r.stack.astype(np.float32) / r.stack.max()
    plain = method.fuse_tile(lum[..., None], lum)
    np.testing.assert_array_equal(with_focus_head.fuse_tile(lum[..., None], lum).fused, plain.fused)


def test_reversing_the_stack_mirrors_the_focus_map_of_a_focus_head(with_focus_head):
    lum = demo_stack(6, 64, seed=5).stack.astype(np.float32)
    lum /= lum.max()
    forward = with_focus_head.fuse_tile(lum[..., None], lum)
    backward = with_focus_head.fuse_tile(lum[::-1, ..., None].copy(), lum[::-1].copy())
    # exact but for float rounding, which the run's soft end amplifies (up to 1.7e-4 here)
    np.testing.assert_allclose(backward.focus, 5 - forward.focus, atol=3e-4)


def test_reversing_the_stack_mirrors_the_focus_map():
    r = demo_stack(6, 64, seed=5)
    forward = fuse(r.stack, method="pdmnet")
    backward = fuse(r.stack[::-1], method="pdmnet")
    np.testing.assert_allclose(backward.focus_map, 5 - forward.focus_map, atol=1e-4)
    np.testing.assert_allclose(backward.fused, forward.fused, atol=1)


def test_identical_slices_give_zero_confidence():
    plane = demo_stack(2, 64, seed=6).stack[0]
    result = fuse(np.stack([plane] * 4), method="pdmnet")
    np.testing.assert_allclose(result.confidence, 0, atol=1e-5)
    np.testing.assert_allclose(result.fused, plane, atol=1)


def test_inference_asks_for_full_float32_on_its_device(method, monkeypatch):
    # cuDNN would otherwise run the convolutions in TF32 on a GPU, beyond the 1e-4 tolerance
    from napari_pdmfuse.methods import pdmnet

    asked = []

    @contextlib.contextmanager
    def spy(device):
        asked.append(device)
        yield

    monkeypatch.setattr(pdmnet, "ieee_float32", spy)
    lum = np.random.default_rng(1).random((3, 32, 32), dtype=np.float32)
    method.fuse_tile(lum[..., None], lum)
    assert asked == [method.device]


@pytest.mark.parametrize("newer_torch", [True, False])
def test_full_float32_switch_on_cuda_only_and_restored(monkeypatch, newer_torch):
    from napari_pdmfuse.model.device import ieee_float32

    if newer_torch:  # torch >= 2.9: cudnn.conv.fp32_precision
        owner, name, off = torch.backends.cudnn.conv, "fp32_precision", "ieee"
    else:  # before: cudnn.allow_tf32 only
        monkeypatch.setattr(torch.backends.cudnn, "conv", object(), raising=False)
        owner, name, off = torch.backends.cudnn, "allow_tf32", False
    previous = getattr(owner, name)
    with ieee_float32(torch.device("cpu")):
        assert getattr(owner, name) == previous  # nothing global changes for the CPU
    with ieee_float32(torch.device("cuda")):  # flags only: no GPU needed to set them
        assert getattr(owner, name) == off
    assert getattr(owner, name) == previous


def weakly_textured_deep_stack(size: int) -> np.ndarray:
    """30 slices of stained brightfield tissue under a disk PSF: on half of its pixels the
    confidence is below 0.3 and many slices' weights lie near the focus map's run floor, which
    amplifies what the halo leaves out (the hardest seams for the focus map found)."""
    rng = np.random.default_rng(10)
    sharp = render.brightfield(rng, (size, size))
    depth = render.depth_map(rng, (size, size), 30)
    return render.render_stack(sharp, depth, 30, rng=rng, psf_kind="disk", blur_per_slice=2.0).stack


@pytest.mark.parametrize(
    "deep", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["3 slices", "30 slices"]
)
@pytest.mark.parametrize("focus_head", [False, True])
def test_tiles_stitch_to_the_whole_image_result(head_weights, focus_head, deep):
    # 520 px: larger than a tile with its halo, not a multiple of the tile or of the stride
    stack = weakly_textured_deep_stack(520) if deep else demo_stack(3, 520, seed=8).stack
    stack = stack.astype(np.float32)
    options = {"method": "pdmnet", "weights": head_weights if focus_head else None}
    whole = fuse(stack, tile=4096, **options)
    tiled = fuse(stack, tile=176, **options)
    assert np.abs(tiled.fused - whole.fused).max() <= 1e-4 * float(np.ptp(stack))
    off = np.abs(tiled.focus_map - whole.focus_map) > 3e-4 * (len(stack) - 1)
    # Where two planes far apart tie for the best slice, a tile may read either; such pixels
    # must be rare and marked as doubtful (the untrained head has 2 of 270 400 here).
    assert off.mean() <= (0 if not focus_head else 1e-5)
    assert (np.maximum(whole.confidence, tiled.confidence)[off] < 0.05).all()


def test_the_shipped_network_costs_at_most_800_multiply_adds_per_input_voxel():
    model = load_model()
    assert model.light and sum(multiply_adds_per_voxel(model).values()) <= 800


def test_light_logits_are_bounded_and_the_design_survives_saving(tmp_path):
    torch.manual_seed(0)
    model = PDMNet(LIGHT_WIDTHS, focus_head="fine", light=True, logit_bound=LIGHT_LOGIT_BOUND)
    save_weights(model, tmp_path / "light.pt", {})
    loaded = load_model(tmp_path / "light.pt")
    assert loaded.light and loaded.logit_bound == LIGHT_LOGIT_BOUND
    x = torch.rand(1, 5, 64, 64) * 1e4  # far outside the normalised range: unbounded, huge
    with torch.no_grad():
        logits, focus = loaded(x)
        assert logits.abs().max() <= LIGHT_LOGIT_BOUND and focus.abs().max() <= LIGHT_LOGIT_BOUND
        torch.testing.assert_close(logits, model.eval()(x)[0])


def test_shipped_weights_match_their_checksum():
    import json

    assert sha256(WEIGHTS_PATH) == json.loads(CARD_PATH.read_text())["sha256"]
    assert WEIGHTS_PATH.stat().st_size < 5 * 2**20


def test_weights_that_would_run_code_are_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"widths": [8], "state": Payload()}))
    with pytest.raises(InputError, match="not a PDMNet weights file"):
        load_model(evil)


def test_weights_of_another_shape_are_refused(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"widths": [4, 4], "state": {}}, other)
    with pytest.raises(InputError, match="not a PDMNet weights file"):
        load_model(other)


@pytest.mark.parametrize("design", ["shipped", "first", "coarse head"])
def test_inference_computes_what_the_reference_formulation_does(design):
    # Without gradients the network runs in fewer passes over memory (model.fastops: each
    # level's inputs written once, fused ReLUs, one call for both heads); training
    # differentiates the reference. They compute the same values, chunked or not.
    torch.manual_seed(1)
    if design == "shipped":
        model = load_model()
    else:
        widths = DEFAULT_WIDTHS if design == "first" else LIGHT_WIDTHS
        model = PDMNet(
            widths,
            focus_head="coarse" if design == "coarse head" else None,
            light=design != "first",
            logit_bound=LIGHT_LOGIT_BOUND,
        )
        channels_last(model.eval())
    if torch.backends.mkldnn.is_available():  # the speed of the CPU path relies on it
        assert fastops.conv_pointwise() is not None
    x = torch.rand(7, 1, 96, 112)
    with torch.enable_grad():
        reference = model.encode(x, 7, 3)
        expected = model.half_logits(reference)
    with torch.inference_mode():
        for chunk in (0, 3):
            feats = model.encode(x, 7, chunk)
            for f, ref in zip(feats, reference, strict=True):
                torch.testing.assert_close(f, ref.detach(), rtol=1e-5, atol=1e-5)
            for logits, ref in zip(model.half_logits(feats), expected, strict=True):
                torch.testing.assert_close(logits, ref.detach(), rtol=1e-5, atol=1e-5)
