"""The training command: its weights load and fuse, and a focus head added later keeps them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_pdmfuse import fuse
from napari_pdmfuse.model.weights import load_model, sha256
from napari_pdmfuse.training import data as training_data
from napari_pdmfuse.training import focus as training_focus
from napari_pdmfuse.training import recipe as train
from napari_pdmfuse.training.rendering import random_stack


@pytest.fixture(autouse=True)
def small_validation(monkeypatch):
    rng = np.random.default_rng(1)
    examples = [training_data.to_example(random_stack(rng, (64, 64), n)) for n in (3, 5)]
    monkeypatch.setattr(train, "validation_set", lambda mix: examples)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # training sets it for the process


def run(out, *extra: str) -> dict:
    tiny = ["--pool", "8", "--size", "64", "--steps", "4", "--log-every", "2", "--threads", "1"]
    tiny += ["--refine-steps", "4", "--terraces", "4", "--deep-stacks", "2", "--real", "4"]
    train.main([*tiny, "--out", str(out), *extra])
    return json.loads(out.with_suffix(".json").read_text())


@pytest.mark.parametrize(
    ("options", "head"),
    [
        ([], "fine"),  # the shipped recipe: the second stage adds a fine focus head
        (["--refine-steps", "0"], None),
        (["--joint-focus-weight", "0.1", "--refine-steps", "0"], "coarse"),
    ],
)
def test_training_writes_verified_weights_that_fuse(tmp_path, options, head):
    out = tmp_path / "weights" / "pdmnet.pt"
    card = run(out, *options)
    assert card["sha256"] == sha256(out)
    assert {"val_psnr", "val_ssim", "val_focus_mae", "val_run_focus_mae"} <= set(card["validation"])
    model = load_model(out)
    kind = model.focus_head and ("coarse" if model.focus_head.coarse else "fine")
    assert kind == head and ("refine" in card) == (head == "fine")
    stack = random_stack(np.random.default_rng(2), (48, 48), 4).stack
    result = fuse(stack, weights=str(out))
    assert result.fused.dtype == stack.dtype and result.fused.shape == stack.shape[1:]
    assert np.isfinite(result.focus_map).all() and np.isfinite(result.confidence).all()


def test_the_second_stage_adds_whole_slice_terraces_to_the_pool():
    (terrace,) = training_data.render_pool(1, 0, 64, (5,), depth_kinds=("terraces",))[5]
    assert set(np.unique(terrace.depth)) <= {0.0, 1.0, 2.0, 3.0, 4.0}
    (surface,) = training_data.render_pool(1, 0, 64, (5,))[5]
    assert not np.array_equal(surface.depth, np.round(surface.depth))


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_the_second_stage_draws_its_share_of_batches_from_deep_stacks(tmp_path, monkeypatch, share):
    drawn = []  # the fewest slices of the pool each batch is drawn from

    def recording_draw(pool, rng, args):
        drawn.append(min(pool))
        return draw(pool, rng, args)

    draw = training_data.draw
    monkeypatch.setattr(training_data, "draw", recording_draw)  # either stage, any pool
    monkeypatch.setattr(training_focus, "draw", recording_draw)  # the second's deep stacks
    card = run(tmp_path / "deep.pt", "--deep-share", str(share))
    assert card["refine"]["deep_share"] == share and card["refine"]["deep_stacks"] == 2
    first, second = drawn[:4], drawn[4:]
    assert len(second) == 4 and max(first) < min(training_data.DEEP_SLICE_COUNTS)
    assert all((n >= min(training_data.DEEP_SLICE_COUNTS)) == bool(share) for n in second)


def test_blur_range_reaches_the_rendered_training_stacks(tmp_path):
    (sharp,) = training_data.render_pool(1, 0, 64, (8,))[8]
    (finer,) = training_data.render_pool(1, 0, 64, (8,), blur_range=(0.2, 0.3))[8]
    np.testing.assert_array_equal(finer.depth, sharp.depth)  # the same draws up to the blur
    step = [np.abs(np.diff(ex.slices.astype(np.float32), axis=0)).mean() for ex in (sharp, finer)]
    assert step[1] < step[0]  # less blur per slice: neighbouring planes differ less
    card = run(tmp_path / "fine.pt", "--blur-range", "0.4,4")
    assert card["network"]["blur_range"] == [0.4, 4.0]


def test_the_mix_reaches_the_training_stacks_and_the_card(tmp_path, monkeypatch):
    mixes = []
    render_pool = training_data.render_pool

    def recording_pool(*args, mix, **kwargs):
        mixes.append(mix)
        return render_pool(*args, mix=mix, **kwargs)

    monkeypatch.setattr(train, "render_pool", recording_pool)
    monkeypatch.setattr(training_focus, "render_pool", recording_pool)
    card = run(tmp_path / "v2.pt", "--mix", "v2")
    assert card["network"]["mix"] == "v2" and mixes == ["v2"] * 3  # pool, terraces, deep


def test_a_focus_head_added_later_leaves_the_network_as_it_was(tmp_path):
    first = tmp_path / "fusion.pt"
    run(first, "--refine-steps", "0")
    second = tmp_path / "both.pt"
    card = run(second, "--init", str(first), "--focus-steps", "4", "--refine-steps", "0")
    assert card["network"]["init"] == str(first) and card["focus_head"]["steps"] == 4
    before, after = load_model(first).state_dict(), load_model(second).state_dict()
    head = {k for k in after if k.startswith("focus_head.")}
    assert head and set(after) - head == set(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), key


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--init", "any.pt", "--refine-steps", "0"], "--init skips the first stage"),
        (["--focus-steps", "3"], "give --refine-steps 0"),
        (["--joint-focus-weight", "0.1"], "which the second stage would replace"),
        (
            [
                *("--init", "any.pt", "--focus-steps", "3"),
                *("--joint-focus-weight", "0.1", "--refine-steps", "0"),
            ],
            "which --init",
        ),
        (
            ["--focus-steps", "3", "--joint-focus-weight", "0.1", "--refine-steps", "0"],
            "would replace the focus head",
        ),
        (["--joint-focus-weight", "0.1", "--refine-steps", "0"], "not the shipped ones"),
    ],
)
def test_contradictory_options_are_refused(capsys, options, message):
    with pytest.raises(SystemExit):
        train.main(options)
    assert message in capsys.readouterr().err
