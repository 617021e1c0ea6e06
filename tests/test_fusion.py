"""The fusion methods against rendered stacks whose truth is known."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from napari_pdmfuse import InputError, fuse, fuse_iter, sizes
from napari_pdmfuse.methods.base import laplacian_energy, select_planes
from napari_pdmfuse.stack import as_stack, normalisation
from napari_pdmfuse.training.rendering import demo_stack

CLASSICAL = ["wavelet", "pyramid"]


def scores(image: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    image = image.astype(np.float64)
    span = float(truth.max() - truth.min())
    return (
        peak_signal_noise_ratio(truth, image, data_range=span),
        structural_similarity(truth, image, data_range=span),
    )


def naive_argmax(stack: np.ndarray) -> np.ndarray:
    s = as_stack(stack)
    block = np.asarray(s.data, dtype=np.float32)
    sharp = laplacian_energy(normalisation(s).luminance(block), size=1.0)
    return select_planes(block, np.argmax(sharp, axis=0))[..., 0]


@pytest.mark.parametrize("method", [*CLASSICAL, "pdmnet"])
def test_beats_best_slice_and_naive_argmax(grey_stack, method):
    truth = grey_stack.truth.astype(np.float64)
    result = fuse(grey_stack.stack, method=method)
    psnr, ssim = scores(result.fused, truth)
    best_psnr = max(scores(s, truth)[0] for s in grey_stack.stack)
    best_ssim = max(scores(s, truth)[1] for s in grey_stack.stack)
    naive_psnr, naive_ssim = scores(naive_argmax(grey_stack.stack), truth)
    assert psnr > max(best_psnr, naive_psnr)
    assert ssim > max(best_ssim, naive_ssim)
    error = np.abs(result.focus_map - grey_stack.depth)[grey_stack.textured]
    assert error.mean() < 1.0


@pytest.mark.parametrize("method", [*CLASSICAL, "argmax", "pdmnet"])
@pytest.mark.parametrize(
    ("dtype", "rgb"), [(np.uint8, False), (np.uint16, False), (np.float32, False), (np.uint8, True)]
)
def test_dtype_and_layout_preserved(method, dtype, rgb):
    r = demo_stack(4, 64, rgb=rgb, bits=8, seed=2)
    stack = (r.stack / 255).astype(dtype) if dtype == np.float32 else r.stack.astype(dtype)
    result = fuse(stack, method=method)
    assert result.fused.dtype == dtype
    assert result.fused.shape == stack.shape[1:]
    assert result.focus_map.dtype == np.float32 and result.focus_map.shape == (64, 64)
    assert result.confidence.dtype == np.float32 and result.confidence.shape == (64, 64)
    assert result.focus_map.min() >= 0 and result.focus_map.max() <= 3
    assert result.confidence.min() >= 0 and result.confidence.max() <= 1


@pytest.mark.parametrize("method", [*CLASSICAL, "pdmnet"])
@pytest.mark.parametrize("n_slices", [2, 40])
def test_any_number_of_slices(method, n_slices):
    r = demo_stack(n_slices, 64, seed=3)
    result = fuse(r.stack, method=method)
    psnr, _ = scores(result.fused, r.truth)
    assert psnr > max(scores(s, r.truth)[0] for s in r.stack)
    assert result.focus_map.min() >= 0 and result.focus_map.max() <= n_slices - 1


@pytest.mark.parametrize("method", [*CLASSICAL, "argmax", "pdmnet"])
@pytest.mark.parametrize("size", [33, 64])
def test_constant_planes_fuse_within_their_range(method, size):
    stack = np.stack([np.full((size, size + 5), v, np.float32) for v in (1, 2, 3, 4)])
    result = fuse(stack, method=method)
    assert result.fused.min() >= 1 - 1e-4 and result.fused.max() <= 4 + 1e-4


def test_focus_map_is_fractional_and_follows_depth(grey_stack):
    result = fuse(grey_stack.stack, method="wavelet")
    assert not np.allclose(result.focus_map, np.round(result.focus_map))
    corr = np.corrcoef(result.focus_map[grey_stack.textured], grey_stack.depth[grey_stack.textured])
    assert corr[0, 1] > 0.9


def test_physical_focus_units(grey_stack):
    plain = fuse(grey_stack.stack, method="wavelet")
    physical = fuse(grey_stack.stack, method="wavelet", z_spacing=0.5)
    assert physical.focus_unit == "physical"
    np.testing.assert_allclose(physical.focus_map, plain.focus_map * 0.5, rtol=1e-6)


def test_progress_counts_tiles(grey_stack):
    gen = fuse_iter(grey_stack.stack, method="argmax", tile=64)
    seen = []
    try:
        while True:
            seen.append(next(gen))
    except StopIteration as stop:
        result = stop.value
    assert [p.done for p in seen] == [0, 1, 2, 3, 4]
    assert {p.total for p in seen} == {4}
    assert result.fused.shape == grey_stack.stack.shape[1:]


@pytest.mark.parametrize("method", ["wavelet", "pyramid", "argmax"])
def test_tiled_equals_whole_image(method):
    # 520 px: larger than a tile with its halo, not a multiple of the tile or of the stride
    r = demo_stack(3, 520, seed=4)
    whole = fuse(r.stack, method=method, tile=4096)
    tiled = fuse(r.stack, method=method, tile=176)
    np.testing.assert_array_equal(tiled.fused, whole.fused)
    np.testing.assert_array_equal(tiled.focus_map, whole.focus_map)


@pytest.mark.parametrize(
    ("stack", "message"),
    [
        (np.zeros((64, 64), np.uint8), "single 2-D image"),
        (np.zeros((1, 64, 64), np.uint8), "only one focal plane"),
        (np.zeros((3, 0, 64), np.uint8), "empty axis"),
        (np.zeros((3, 8, 8), bool), "data type bool"),
        (np.zeros((3, 8, 8), np.complex64), "data type complex64"),
        (np.full((3, 8, 8), np.nan, np.float32), "NaN or infinite"),
        ([np.zeros((8, 8)), np.zeros((8, 9))], "different shapes"),
    ],
)
def test_bad_input_is_one_clear_sentence(stack, message):
    with pytest.raises(InputError, match=message) as info:
        fuse(stack, method="wavelet")
    assert str(info.value).endswith(".") and "\n" not in str(info.value)


def test_unknown_method_is_refused(grey_stack):
    with pytest.raises(InputError, match="Unknown method 'best'"):
        fuse(grey_stack.stack, method="best")


def test_brightness_correction_undoes_flicker_between_planes():
    r = demo_stack(5, 128, seed=3)
    clean = r.stack.astype(np.float32)
    gains = np.array([1.0, 1.3, 0.8, 1.15, 0.9], np.float32)  # a flickering lamp
    flickering = clean * gains[:, None, None]
    reference = fuse(clean)
    span = float(np.ptp(clean))
    as_is = fuse(flickering)
    corrected = fuse(flickering, correct_brightness=True)
    # corrected, the stack fuses as if the lamp had been steady at its mean brightness
    error = np.abs(corrected.fused - reference.fused * gains.mean()) / span
    assert np.median(error) < 1e-3 and error.max() < 0.03
    assert np.abs(corrected.focus_map - reference.focus_map).mean() < 0.03
    assert np.median(np.abs(as_is.fused - reference.fused * gains.mean()) / span) > 0.03
    assert np.abs(as_is.focus_map - reference.focus_map).mean() > 0.1


def test_brightness_correction_refuses_planes_far_apart():
    # e.g. a confocal stack that runs past the specimen: correcting would amplify noise
    stack = (
        demo_stack(3, 64, seed=4).stack.astype(np.float32) * np.float32([1, 1, 3])[:, None, None]
    )
    fuse(stack)  # fine without correction
    with pytest.raises(InputError, match="differs by more than a factor of 2"):
        fuse(stack, correct_brightness=True)


def test_tiles_are_sized_from_free_memory_on_the_host_or_the_gpu(monkeypatch):
    import psutil
    import torch

    from napari_pdmfuse.planning import tile_budget

    class Memory:
        available = 64 * 2**30

    class OnGpu:
        device = torch.device("cuda", 0)

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Memory)
    monkeypatch.setattr(sizes, "limit_left", lambda: None)  # no ulimit -v, no cgroup limit
    assert tile_budget() == 640 * 2**20  # capped: a run stays under 1.5 GB of RSS
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (10 * 2**30, 80 * 2**30))
    assert tile_budget(OnGpu()) == 5 * 2**30  # half the free device memory
    Memory.available = 8 * 2**30
    assert tile_budget(OnGpu()) == 2 * 2**30  # but no more than a quarter of the host's
    Memory.available = 2**29
    assert tile_budget() == 256 * 2**20  # never below 256 MiB
