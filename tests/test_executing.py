"""Around each tile: GPU out-of-memory recovery, and zero confidence where nothing has texture."""

from __future__ import annotations

import time
import warnings

import dask.array as da
import numpy as np
import pytest
import torch

from napari_pdmfuse import InputError, PdmFuseWarning, fuse
from napari_pdmfuse.executing import flat_mask
from napari_pdmfuse.methods.argmax import ArgmaxMethod
from napari_pdmfuse.planning import FusionPlan
from napari_pdmfuse.stack import as_stack, normalisation, to_dtype
from napari_pdmfuse.training.rendering import demo_stack


class FakeGPUMethod:
    """Argmax, "on a GPU" that runs out of memory for blocks over ``limit`` pixels."""

    name = "fake"
    halo = 16
    align = 16
    bytes_per_voxel = 24

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.device = torch.device("cuda")
        self.calls: list[tuple[tuple[int, int], str, bool]] = []

    def to(self, device: str) -> None:
        self.device = torch.device(device)

    def fuse_tile(self, block: np.ndarray, lum: np.ndarray):
        shape = block.shape[1:3]
        on_gpu = self.device.type == "cuda"
        fails = on_gpu and (self.limit is None or shape[0] * shape[1] > self.limit)
        self.calls.append((shape, self.device.type, fails))
        if fails:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return ArgmaxMethod().fuse_tile(block, lum)


class MemorySink:
    """One stack's stitched tiles, kept as they arrive."""

    def __init__(self, stack) -> None:
        height, width = stack.shape_yx
        self.fused = np.empty((height, width, stack.n_channels), dtype=stack.dtype)
        self.focus = np.empty((height, width), dtype=np.float32)
        self.confidence = np.empty((height, width), dtype=np.float32)

    def write(self, tile, result) -> None:
        self.fused[tile.write] = to_dtype(result.fused, self.fused.dtype)
        self.focus[tile.write] = result.focus
        self.confidence[tile.write] = result.confidence


def run(method, data: np.ndarray, tile: int):
    stack = as_stack(data)
    job = FusionPlan(stack, method, normalisation(stack), tile)
    sink = MemorySink(stack)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in job.run(sink):
            pass
    messages = [str(w.message) for w in caught if issubclass(w.category, PdmFuseWarning)]
    return sink, messages


@pytest.fixture(scope="module")
def stack() -> np.ndarray:
    return demo_stack(3, 300, seed=9).stack


@pytest.fixture(scope="module")
def reference(stack):
    return fuse(stack, method="argmax", tile=4096)


def same(sink, reference) -> None:
    np.testing.assert_array_equal(sink.fused[..., 0], reference.fused)
    np.testing.assert_array_equal(sink.focus, reference.focus_map)
    np.testing.assert_array_equal(sink.confidence, reference.confidence)


def test_oom_halves_the_tile_and_remembers(stack, reference):
    method = FakeGPUMethod(limit=130 * 130)  # a 96 px core with its halo fits, 192 px does not
    sink, messages = run(method, stack, tile=192)
    same(sink, reference)  # split tiles stitch exactly
    assert messages == ["The GPU ran out of memory; continuing with tiles of 96 px."]
    failures = [c for c in method.calls if c[2]]
    assert len(failures) == 1  # later tiles are split up front, not tried and failed again
    assert all(device == "cuda" for _, device, _ in method.calls)


def test_oom_at_the_smallest_tile_falls_back_to_the_cpu(stack, reference):
    method = FakeGPUMethod(limit=None)  # nothing fits
    sink, messages = run(method, stack, tile=64)
    same(sink, reference)
    assert messages == [
        "The GPU ran out of memory; continuing with tiles of 32 px.",
        "The GPU ran out of memory; continuing with tiles of 16 px.",
        "The GPU ran out of memory even with 16 px tiles; continuing on the CPU, which is slower.",
    ]
    assert method.device.type == "cpu"
    assert method.calls[-1][1] == "cpu" and not method.calls[-1][2]


class FakeGPUOnlyMethod(FakeGPUMethod):
    to = None  # nothing to move: the error must reach the user


def test_oom_without_a_model_to_move_is_raised(stack):
    method = FakeGPUOnlyMethod(limit=None)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        run(method, stack, tile=16)


def test_other_errors_are_not_retried(stack):
    method = FakeGPUMethod(limit=None)
    method.fuse_tile = lambda block, lum: (_ for _ in ()).throw(RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):
        run(method, stack, tile=64)


class SlowMethod:
    """Argmax that holds on to its block a while, checking that nothing changed it meanwhile."""

    name = "slow"
    halo = 16
    align = 16
    bytes_per_voxel = 24

    def fuse_tile(self, block: np.ndarray, lum: np.ndarray):
        before = block.copy()
        time.sleep(0.05)  # the next tile is being read meanwhile
        assert np.array_equal(block, before), "the block changed while it was being fused"
        return ArgmaxMethod().fuse_tile(block, lum)


def test_reading_ahead_never_touches_the_tile_being_fused(stack, reference):
    # float32 blocks are fused straight from the read-ahead buffers
    lazy = da.from_array(stack.astype(np.float32), chunks=(3, 64, 64))
    sink, _ = run(SlowMethod(), lazy, tile=96)
    np.testing.assert_array_equal(sink.fused[..., 0], reference.fused)
    np.testing.assert_array_equal(sink.focus, reference.focus_map)


def test_flat_mask():
    lum = np.zeros((3, 40, 50), np.float32)
    lum[1] = 5  # planes constant but different: no texture anywhere
    assert flat_mask(lum, 4).all()
    lum[2, 20, 25] = 1  # one textured pixel: flat beyond the radius only
    mask = flat_mask(lum, 4)
    assert not mask[16:25, 21:30].any()  # within 4 px of the textured pixel
    assert mask[:15].all() and mask[26:].all() and mask[:, :20].all() and mask[:, 31:].all()
    lum[:, ::2] += 1  # texture everywhere
    assert flat_mask(lum, 4) is None


@pytest.mark.parametrize("method", ["wavelet", "pyramid", "argmax"])
def test_zero_confidence_far_from_texture_and_tiles_still_stitch(method):
    textured = demo_stack(3, 96, seed=10).stack.astype(np.float32)
    data = np.stack([np.full((520, 520), 100.0 * (k + 1), np.float32) for k in range(3)])
    data[:, 200:296, 200:296] = textured
    whole = fuse(data, method=method, tile=4096)
    tiled = fuse(data, method=method, tile=176)
    np.testing.assert_array_equal(tiled.confidence, whole.confidence)
    np.testing.assert_array_equal(tiled.fused, whole.fused)
    assert (whole.confidence[:30] == 0).all() and (whole.confidence[-30:] == 0).all()
    assert whole.confidence[200:296, 200:296].max() > 0


class ShortOfMemoryMethod(FakeGPUMethod):
    """Argmax on the host, whose allocations fail for blocks over ``limit`` pixels, as NumPy's
    do (MemoryError) or PyTorch's CPU allocator's (a RuntimeError)."""

    def __init__(self, limit: int | None, error: BaseException) -> None:
        super().__init__(limit)
        self.device = torch.device("cpu")
        self.error = error

    def fuse_tile(self, block: np.ndarray, lum: np.ndarray):
        shape = block.shape[1:3]
        fails = self.limit is None or shape[0] * shape[1] > self.limit
        self.calls.append((shape, "cpu", fails))
        if fails:
            raise self.error
        return ArgmaxMethod().fuse_tile(block, lum)


HOST_ERRORS = [
    MemoryError("Unable to allocate 2.00 GiB for an array"),
    RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 2147483648"),
]


@pytest.mark.parametrize("error", HOST_ERRORS, ids=["numpy", "torch"])
def test_host_memory_running_short_halves_the_tile(stack, reference, error):
    method = ShortOfMemoryMethod(limit=130 * 130, error=error)
    sink, messages = run(method, stack, tile=192)
    same(sink, reference)
    assert messages == ["Memory ran short; continuing with tiles of 96 px."]
    assert len([c for c in method.calls if c[2]]) == 1


@pytest.mark.parametrize("error", HOST_ERRORS, ids=["numpy", "torch"])
def test_host_memory_short_even_for_the_smallest_tile_is_one_sentence(stack, error):
    method = ShortOfMemoryMethod(limit=None, error=error)
    with pytest.raises(InputError) as refused:
        run(method, stack, tile=32)
    assert str(refused.value).startswith("Memory ran out even with tiles of 16 px")
    assert str(refused.value).endswith(
        "; raise the memory limit, close other programs or fuse fewer planes."
    )


def test_a_fusion_leaves_napari_s_dask_cache_alone():
    # napari enters its dask cache (a global dask callback) while it draws a lazy layer; a
    # fusion reading its stack in another thread meanwhile must not fill it with copies.
    cache_module = pytest.importorskip("dask.cache")
    pytest.importorskip("cachey")
    data = demo_stack(4, 96, seed=11).stack
    lazy = da.from_array(data, chunks=(1, 48, 48))
    cache = cache_module.Cache(2**30)
    with cache:
        result = fuse(lazy, method="argmax", tile=64)
    np.testing.assert_array_equal(result.fused, fuse(data, method="argmax", tile=64).fused)
    assert cache.cache.total_bytes == 0
