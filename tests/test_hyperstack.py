"""Named axes: channels that share one focus map, time points one at a time, in memory."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from napari_pdmfuse import InputError, Progress, fuse, fuse_iter
from napari_pdmfuse.reading import normalise_axes
from napari_pdmfuse.training.rendering import demo_stack

WAVELET = {"method": "wavelet"}


@pytest.fixture(scope="module")
def two_channels() -> np.ndarray:
    """(Z, C, Y, X): one rendered stack, and the same stack at twice the intensity."""
    grey = demo_stack(5, 96, seed=1).stack // 2
    return np.stack([grey, grey * 2], axis=1)


@pytest.fixture(scope="module")
def time_lapse(two_channels) -> np.ndarray:
    """(T, Z, C, Y, X): the two-channel stack, then a different specimen."""
    other = demo_stack(5, 96, seed=2).stack
    return np.stack([two_channels, np.stack([other, 65535 - other], axis=1)])


def fuse_hyperstack(data: Any, axes: str, **options: Any) -> Any:
    return fuse(data, axes=axes, **options)


def fuse_hyperstack_iter(data: Any, axes: str, **options: Any) -> Any:
    return fuse_iter(data, axes=axes, **options)


def drain(gen: Any) -> tuple[list[Progress], Any]:
    steps = []
    while True:
        try:
            steps.append(next(gen))
        except StopIteration as stop:
            return steps, stop.value


def test_channel_order_does_not_change_the_result(two_channels):
    zcyx = fuse_hyperstack(two_channels, "ZCYX", **WAVELET)
    czyx = fuse_hyperstack(
        np.ascontiguousarray(two_channels.transpose(1, 0, 2, 3)), "czyx", **WAVELET
    )
    assert zcyx.axes == czyx.axes == "CYX" and zcyx.map_axes == "YX"
    assert zcyx.fused.shape == (2, 96, 96) and zcyx.focus_map.shape == (96, 96)
    np.testing.assert_array_equal(zcyx.focus_map, czyx.focus_map)
    np.testing.assert_array_equal(zcyx.fused, czyx.fused)
    # Both channels follow the same per-pixel weights: twice the input, twice the output.
    assert np.abs(zcyx.fused[1].astype(int) - 2 * zcyx.fused[0].astype(int)).max() <= 1
    # And the map is the core's: channels last, named as a channel axis.
    core = fuse(two_channels.transpose(0, 2, 3, 1), channel_axis=3, **WAVELET)
    np.testing.assert_array_equal(zcyx.focus_map, core.focus_map)


def test_time_points_round_trip(time_lapse):
    steps, result = drain(fuse_hyperstack_iter(time_lapse, "TZCYX", **WAVELET))
    assert result.axes == "TCYX" and result.map_axes == "TYX"
    assert result.fused.shape == (2, 2, 96, 96) and result.fused.dtype == time_lapse.dtype
    assert result.focus_map.shape == result.confidence.shape == (2, 96, 96)
    for t in range(2):
        alone = fuse_hyperstack(time_lapse[t], "ZCYX", **WAVELET)
        np.testing.assert_array_equal(result.fused[t], alone.fused)
        np.testing.assert_array_equal(result.focus_map[t], alone.focus_map)
        np.testing.assert_array_equal(result.confidence[t], alone.confidence)
    assert not np.array_equal(result.focus_map[0], result.focus_map[1])
    done = [p.done for p in steps]
    assert done == sorted(done) and steps[0].done == 0
    assert steps[-1].done == steps[-1].total and len({p.total for p in steps}) == 1


def test_results_have_time_then_channels_whatever_the_input_order(time_lapse):
    ctzyx = np.ascontiguousarray(time_lapse.transpose(2, 0, 1, 3, 4))
    result = fuse_hyperstack(ctzyx, "CTZYX", **WAVELET)
    reference = fuse_hyperstack(time_lapse, "TZCYX", **WAVELET)
    assert result.axes == "TCYX" and result.map_axes == "TYX"
    np.testing.assert_array_equal(result.fused, reference.fused)
    np.testing.assert_array_equal(result.focus_map, reference.focus_map)


def test_separate_channels_get_their_own_maps(time_lapse):
    result = fuse_hyperstack(time_lapse, "TZCYX", channel_mode="separate", **WAVELET)
    assert result.map_axes == "TCYX" and result.focus_map.shape == (2, 2, 96, 96)
    for t in range(2):
        for c in range(2):
            alone = fuse(time_lapse[t, :, c], **WAVELET)
            np.testing.assert_array_equal(result.fused[t, c], alone.fused)
            np.testing.assert_array_equal(result.focus_map[t, c], alone.focus_map)


def test_focus_channel_decides_for_every_channel():
    grey = demo_stack(5, 96, seed=1).stack
    other = demo_stack(5, 96, seed=3).stack  # a different specimen at other depths
    data = np.stack([other, grey], axis=1)
    result = fuse_hyperstack(data, "ZCYX", focus_channel=1, **WAVELET)
    alone = fuse(grey, **WAVELET)
    np.testing.assert_array_equal(result.focus_map, alone.focus_map)
    np.testing.assert_array_equal(result.fused[1], alone.fused)
    combined = fuse_hyperstack(data, "ZCYX", **WAVELET)
    assert not np.array_equal(combined.focus_map, result.focus_map)


def test_rgb_samples_match_the_core():
    rgb = demo_stack(4, 64, rgb=True, bits=8, seed=4).stack
    result = fuse_hyperstack(rgb, "ZYXS", **WAVELET)
    core = fuse(rgb, **WAVELET)
    assert result.axes == "YXS"
    np.testing.assert_array_equal(result.fused, core.fused)
    np.testing.assert_array_equal(result.focus_map, core.focus_map)


def test_physical_focus_units_pass_through():
    grey = demo_stack(3, 64, seed=5).stack
    result = fuse_hyperstack(grey[None], "TZYX", z_spacing=0.5, **WAVELET)
    core = fuse(grey, z_spacing=0.5, **WAVELET)
    assert result.focus_unit == "physical" and result.axes == "TYX"
    np.testing.assert_array_equal(result.focus_map[0], core.focus_map)


class OneTimePointAtATime:
    """An array that fails if asked for more than one time point at once."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.reads = data, data.shape, data.dtype, []

    def __getitem__(self, key: tuple) -> np.ndarray:
        assert isinstance(key[0], int), key
        self.reads.append(key[0])
        return self.data[key]


def test_time_points_are_read_one_at_a_time(time_lapse):
    lazy = OneTimePointAtATime(time_lapse)
    result = fuse_hyperstack(lazy, "TZCYX", **WAVELET)
    assert sorted(set(lazy.reads)) == [0, 1]  # each read was one time point (see __getitem__)
    np.testing.assert_array_equal(
        result.fused, fuse_hyperstack(time_lapse, "TZCYX", **WAVELET).fused
    )


def test_alignment_runs_per_time_point(time_lapse):
    result = fuse_hyperstack(time_lapse, "TZCYX", align="translation", **WAVELET)
    assert result.coverage is not None and result.coverage.shape == (2, 96, 96)
    assert result.transforms is not None and [len(t) for t in result.transforms] == [5, 5]
    for plane in result.transforms[0]:  # an unmoved stack stays put
        assert abs(plane.dy) < 0.25 and abs(plane.dx) < 0.25


@pytest.mark.parametrize(
    ("axes", "shape", "match"),
    [
        ("ZQYX", (3, 2, 8, 8), "Unknown axis 'Q'"),
        ("ZZYX", (3, 2, 8, 8), "appears twice"),
        ("TZYX", (3, 8, 8), "name 4 axes but the data has 3"),
        ("TCYX", (2, 3, 8, 8), "no Z axis"),
        ("ZCYXS", (3, 2, 8, 8, 3), "both channels"),
        ("ZYXS", (3, 8, 8, 2), "2 samples"),
        ("", (3, 8, 8), "one letter per axis"),
    ],
)
def test_bad_axes_are_one_sentence(axes, shape, match):
    with pytest.raises(InputError, match=match) as info:
        normalise_axes(axes, shape)
    message = str(info.value)
    assert message.endswith(".") and ". " not in message.replace("e.g. ", "")


@pytest.mark.parametrize(
    ("axes", "options", "match"),
    [
        ("ZCYX", {"z_axis": 1}, "drop z_axis"),
        ("ZCYX", {"channel_mode": "mixed"}, "Unknown channel mode"),
        ("ZYX", {"channel_mode": "separate", "data": "grey"}, "no channel axis"),
        ("ZCYX", {"focus_channel": 2}, "channels 0 to 1"),
        ("ZCYX", {"focus_channel": 0, "channel_mode": "separate"}, "combined channel mode only"),
        ("ZYX", {"focus_channel": 0, "data": "grey"}, "no channel axis"),
        ("ZCYX", {"align": "affine"}, "Unknown alignment model"),
    ],
)
def test_bad_options_fail_before_any_work(two_channels, axes, options, match):
    options = dict(options)
    data = two_channels[:, 0] if options.pop("data", None) else two_channels
    with pytest.raises(InputError, match=match):
        fuse_hyperstack(data, axes, **options, **WAVELET)


def test_dask_time_lapse_matches_numpy(time_lapse):
    import dask.array as da

    lazy = da.from_array(time_lapse, chunks=(1, 5, 1, 48, 48))
    result = fuse_hyperstack(lazy, "TZCYX", align="translation", **WAVELET)
    reference = fuse_hyperstack(time_lapse, "TZCYX", align="translation", **WAVELET)
    np.testing.assert_array_equal(result.fused, reference.fused)
    np.testing.assert_array_equal(result.coverage, reference.coverage)
