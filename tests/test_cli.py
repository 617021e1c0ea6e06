"""The ``pdmfuse`` command end to end: round trips, help, and refusals that write nothing."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_pdmfuse import fusion, planning
from napari_pdmfuse.cli import main
from napari_pdmfuse.training import rendering as render

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OPTIONS = (
    "--output",
    "--focus-map",
    "--confidence",
    "--method",
    "--device",
    "--tile",
    "--overwrite",
    "--quiet",
)


def stack_of(dtype: type, rgb: bool = False, n: int = 5) -> np.ndarray:
    """A small rendered focus stack rescaled to ``dtype``, deterministic."""
    planes = render.random_stack(np.random.default_rng(1), (64, 80), n_slices=n, rgb=rgb).stack
    scaled = planes.astype(np.float64) / max(int(planes.max()), 1) * np.iinfo(dtype).max
    return scaled.astype(dtype)


def run(capsys, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check_maps(focus_path: Path, confidence_path: Path, shape: tuple[int, int], n: int) -> None:
    focus = tifffile.imread(focus_path)
    confidence = tifffile.imread(confidence_path)
    assert focus.dtype == confidence.dtype == np.float32
    assert focus.shape == confidence.shape == shape
    assert focus.min() >= 0 and focus.max() <= n - 1
    assert confidence.min() >= 0 and confidence.max() <= 1


# ---------------------------------------------------------------------------------------------
# Round trips


def test_grey_uint16_tiff_round_trip(tmp_path, capsys):
    data = stack_of(np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", data, imagej=True, metadata={"axes": "ZYX"})
    out, focus, conf = (tmp_path / n for n in ("fused.tif", "focus.tif", "conf.tif"))

    code, stdout, stderr = run(
        capsys, "fuse", tmp_path / "stack.tif", "-o", out, "--focus-map", focus,
        "--confidence", conf, "--method", "argmax", "--tile", 32,
    )  # fmt: skip

    assert code == 0 and stdout == ""
    assert "6/6" in stderr and "fused 5 planes of 64×80 with argmax" in stderr
    fused = tifffile.imread(out)
    assert fused.dtype == np.uint16 and fused.shape == (64, 80)
    check_maps(focus, conf, (64, 80), 5)


def test_tiled_tiff_streams_to_the_in_memory_result(tmp_path, capsys):
    # Four tiles of four window sizes, each read lazily while the one before is fused
    data = render.random_stack(np.random.default_rng(2), (200, 230), n_slices=4).stack
    path = tmp_path / "tiled.tif"
    tifffile.imwrite(path, data, tile=(64, 64), compression="zlib", metadata={"axes": "ZYX"})
    out, focus = tmp_path / "fused.tif", tmp_path / "focus.tif"

    code, _, _ = run(
        capsys, "fuse", path, "-o", out, "--focus-map", focus, "--method", "wavelet",
        "--tile", 160, "--quiet",
    )  # fmt: skip

    assert code == 0
    expected = fusion.fuse(data, method="wavelet", tile=160)
    np.testing.assert_array_equal(tifffile.imread(out), expected.fused)
    np.testing.assert_array_equal(tifffile.imread(focus), expected.focus_map)


def test_correct_brightness_evens_out_flicker(tmp_path, capsys):
    lamp = np.float32([1.0, 1.25, 0.8, 1.1, 0.9])[:, None, None]
    data = (stack_of(np.uint16) * lamp).astype(np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", data, imagej=True, metadata={"axes": "ZYX"})
    out = tmp_path / "fused.tif"

    code, _, _ = run(
        capsys, "fuse", tmp_path / "stack.tif", "-o", out, "--method", "wavelet",
        "--correct-brightness", "--quiet",
    )  # fmt: skip

    assert code == 0
    expected = fusion.fuse(data, method="wavelet", correct_brightness=True).fused
    np.testing.assert_array_equal(tifffile.imread(out), expected)
    assert not np.array_equal(expected, fusion.fuse(data, method="wavelet").fused)


def test_rgb_uint8_tiff_round_trip(tmp_path, capsys):
    data = stack_of(np.uint8, rgb=True, n=4)
    tifffile.imwrite(tmp_path / "rgb.tif", data, photometric="rgb")
    out = tmp_path / "fused.tif"

    code, stdout, stderr = run(
        capsys, "fuse", tmp_path / "rgb.tif", "-o", out, "--method", "argmax", "-q"
    )

    assert (code, stdout, stderr) == (0, "", "")
    with tifffile.TiffFile(out) as tif:
        assert tif.pages.first.photometric == tifffile.PHOTOMETRIC.RGB
        fused = tif.asarray()
    assert fused.dtype == np.uint8 and fused.shape == (64, 80, 3)
    # argmax copies each pixel from one plane: every fused value occurs in the stack there.
    assert ((data == fused[None]).all(axis=-1)).any(axis=0).all()


@pytest.mark.parametrize(("suffix", "rgb"), [(".png", False), (".jpg", True)])
def test_folder_of_planes(tmp_path, capsys, suffix, rgb):
    dtype = np.uint16 if suffix == ".png" else np.uint8
    data = stack_of(dtype, rgb=rgb, n=3)
    folder = tmp_path / "planes"
    folder.mkdir()
    for k, plane in enumerate(data):
        iio.imwrite(folder / f"z{k}{suffix}", plane)
    out, focus, conf = (tmp_path / n for n in ("fused.tif", "focus.tif", "conf.tif"))

    code, _, _ = run(
        capsys, "fuse", folder, "-o", out, "--focus-map", focus, "--confidence", conf,
        "--method", "wavelet", "--quiet",
    )  # fmt: skip

    assert code == 0
    fused = tifffile.imread(out)
    assert fused.dtype == dtype and fused.shape == data.shape[1:]
    check_maps(focus, conf, (64, 80), 3)


def test_list_of_plane_files(tmp_path, capsys):
    data = stack_of(np.uint8, n=3)
    planes = []
    for k, plane in enumerate(data):
        planes.append(tmp_path / f"plane{k}.tif")
        tifffile.imwrite(planes[-1], plane)
    out, focus, conf = (tmp_path / n for n in ("fused.tif", "focus.tif", "conf.tif"))

    code, _, stderr = run(
        capsys, "fuse", *planes, "-o", out, "--focus-map", focus, "--confidence", conf,
        "--method", "argmax", "-q",
    )  # fmt: skip

    assert code == 0 and stderr == ""
    fused = tifffile.imread(out)
    assert fused.dtype == np.uint8 and fused.shape == (64, 80)
    check_maps(focus, conf, (64, 80), 3)


@pytest.mark.skipif(not (SHARED_DATA / "diatom-brightfield").is_dir(), reason="no shared data")
def test_real_diatom_jpegs(tmp_path, capsys):
    # Diatom planes: BSD-3-Clause, MFusionJ project (github.com/gcristobal/MFusionJ, images/);
    # Singh et al., SPIE 12998, 129980Q (2024).
    planes = [SHARED_DATA / "diatom-brightfield" / f"{k}.jpg" for k in (1, 2, 3)]
    out, focus, conf = (tmp_path / n for n in ("fused.tif", "focus.tif", "conf.tif"))

    code, _, stderr = run(
        capsys, "fuse", *planes, "-o", out, "--focus-map", focus, "--confidence", conf,
        "--method", "wavelet", "-q",
    )  # fmt: skip

    assert code == 0, stderr
    fused = tifffile.imread(out)
    assert fused.dtype == np.uint8 and fused.shape == (229, 305, 3)
    check_maps(focus, conf, (229, 305), 3)
    assert fused.std() > 10  # an image, not a flat field


# ---------------------------------------------------------------------------------------------
# Refusals: exit status 2, one line on stderr, nothing written


def _two_d(d: Path) -> list[Path]:
    tifffile.imwrite(d / "one.tif", np.zeros((16, 16), np.uint8))
    return [d / "one.tif"]


def _mismatched(d: Path) -> list[Path]:
    tifffile.imwrite(d / "a.tif", np.zeros((16, 16), np.uint8))
    tifffile.imwrite(d / "b.tif", np.zeros((16, 20), np.uint8))
    return [d / "a.tif", d / "b.tif"]


def _missing(d: Path) -> list[Path]:
    return [d / "nowhere.tif"]


def _text(d: Path) -> list[Path]:
    (d / "notes.tif").write_text("not an image\n")
    return [d / "notes.tif"]


def _same_as_output(d: Path) -> list[Path]:
    tifffile.imwrite(d / "fused.tif", stack_of(np.uint8, n=2), photometric="minisblack")
    return [d / "fused.tif"]


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (_two_d, "single 2-D image"),
        (_mismatched, "b.tif is 16×20"),
        (_missing, "does not exist"),
        (_text, "not a readable image"),
        (_same_as_output, "also an input"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, make, words):
    inputs = make(tmp_path)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}

    code, stdout, stderr = run(
        capsys, "fuse", *inputs, "-o", tmp_path / "fused.tif", "--focus-map",
        tmp_path / "map.tif", "--method", "argmax", "--overwrite",
    )  # fmt: skip

    assert code == 2 and stdout == ""
    assert stderr.startswith("pdmfuse: error: ") and stderr.count("\n") == 1
    assert words in stderr and "Traceback" not in stderr
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    assert after == before  # nothing written, nothing touched, no temporary file left


def test_ome_zarr_outputs_replace_a_store_only_when_complete(tmp_path, capsys, monkeypatch):
    import zarr

    data = stack_of(np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", data, imagej=True, metadata={"axes": "ZYX"})
    out, focus = tmp_path / "fused.ome.zarr", tmp_path / "focus.ome.zarr"
    args = ("fuse", tmp_path / "stack.tif", "-o", out, "--focus-map", focus, "-q")
    code, _, stderr = run(capsys, *args, "--method", "argmax", "--tile", 32)
    assert code == 0 and stderr == ""
    fused = zarr.open_group(str(out), mode="r")
    assert fused["0"].dtype == np.uint16 and fused["0"].shape == (64, 80)
    assert fused.attrs["ome"]["multiscales"][0]["axes"][-1]["name"] == "x"
    focus_map = zarr.open_group(str(focus), mode="r")["0"][...]
    assert focus_map.dtype == np.float32 and 0 <= focus_map.min() <= focus_map.max() <= 4
    before = fused["0"][...]

    def interrupted(self, sink):
        yield planning.Progress(0, 4)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(planning.FusionPlan, "run", interrupted)
        code, _, stderr = run(capsys, *args, "--overwrite")
    assert code == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "focus.ome.zarr", "fused.ome.zarr", "stack.tif",
    ]  # fmt: skip
    np.testing.assert_array_equal(zarr.open_group(str(out), mode="r")["0"][...], before)

    code, _, stderr = run(capsys, *args, "--overwrite", "--method", "wavelet")
    assert code == 0 and stderr == ""
    assert not np.array_equal(zarr.open_group(str(out), mode="r")["0"][...], before)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "focus.ome.zarr", "fused.ome.zarr", "stack.tif",
    ]  # fmt: skip


def test_ome_zarr_input_with_its_axes_and_physical_sizes(tmp_path, capsys):
    import zarr

    data = stack_of(np.uint16)
    group = zarr.open_group(str(tmp_path / "stack.ome.zarr"), mode="w", zarr_format=2)
    group.create_array("0", shape=data.shape, chunks=(1, 32, 32), dtype=data.dtype)[...] = data
    um = {"type": "space", "unit": "micrometer"}
    scale = [{"type": "scale", "scale": [2.0, 0.5, 0.5]}]
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": "z", **um}, {"name": "y", **um}, {"name": "x", **um}],
            "datasets": [{"path": "0", "coordinateTransformations": scale}],
        }
    ]
    out, focus = tmp_path / "fused.tif", tmp_path / "focus.tif"
    code, _, stderr = run(
        capsys, "fuse", tmp_path / "stack.ome.zarr", "-o", out, "--focus-map", focus,
        "--focus-units", "um", "--method", "argmax", "-q",
    )  # fmt: skip
    assert code == 0 and stderr == ""
    expected = fusion.fuse(data, method="argmax", z_spacing=2.0)
    np.testing.assert_array_equal(tifffile.imread(out), expected.fused)
    np.testing.assert_allclose(tifffile.imread(focus), expected.focus_map)
    with tifffile.TiffFile(out) as tif:
        assert tif.imagej_metadata["unit"] == "um"


def test_existing_output_refused_then_overwritten(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "stack.tif", stack_of(np.uint8, n=3), photometric="minisblack")
    out = tmp_path / "fused.tif"
    out.write_bytes(b"an earlier result")
    mtime = out.stat().st_mtime_ns
    args = ("fuse", tmp_path / "stack.tif", "-o", out, "--method", "argmax", "-q")

    code, _, stderr = run(capsys, *args)
    assert code == 2 and "already exists" in stderr and "--overwrite" in stderr
    assert out.read_bytes() == b"an earlier result" and out.stat().st_mtime_ns == mtime

    code, _, stderr = run(capsys, *args, "--overwrite")
    assert code == 0 and stderr == ""
    assert tifffile.imread(out).shape == (64, 80)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fused.tif", "stack.tif"]


def test_existing_second_output_refused_before_fusing(tmp_path, capsys, monkeypatch):
    tifffile.imwrite(tmp_path / "stack.tif", stack_of(np.uint8, n=3), photometric="minisblack")
    (tmp_path / "map.tif").write_bytes(b"old map")

    def never(*args, **kwargs):
        raise AssertionError("fused although an output was refused")

    monkeypatch.setattr(fusion, "fuse_iter", never)
    code, _, stderr = run(
        capsys, "fuse", tmp_path / "stack.tif", "-o", tmp_path / "fused.tif",
        "--focus-map", tmp_path / "map.tif", "--method", "argmax",
    )  # fmt: skip
    assert code == 2 and "map.tif already exists" in stderr
    assert not (tmp_path / "fused.tif").exists()


def test_interrupt_writes_nothing(tmp_path, capsys, monkeypatch):
    tifffile.imwrite(tmp_path / "stack.tif", stack_of(np.uint8, n=3), photometric="minisblack")

    def interrupted(self, sink):
        yield planning.Progress(0, 4)
        assert len(list(tmp_path.glob(".f.tif.pdmfuse-tmp-*"))) == 1  # streaming into a temp
        raise KeyboardInterrupt

    monkeypatch.setattr(planning.FusionPlan, "run", interrupted)
    code, _, stderr = run(capsys, "fuse", tmp_path / "stack.tif", "-o", tmp_path / "f.tif")
    assert code == 130 and "interrupted" in stderr
    assert [p.name for p in tmp_path.iterdir()] == ["stack.tif"]


def test_usage_error_exits_2(tmp_path, capsys):
    code, _, stderr = run(capsys, "fuse", tmp_path / "x.tif", "--method", "magic", "-o", "f.tif")
    assert code == 2 and "'magic' is not a method; choose one of pdmnet" in stderr
    code, _, stderr = run(capsys, "fuse", tmp_path / "x.tif", "-o", "f.tif", "--tile", "0")
    assert code == 2 and "--tile" in stderr


# ---------------------------------------------------------------------------------------------
# Help


def test_help_explains_every_option(capsys):
    code, stdout, _ = run(capsys, "--help")
    assert code == 0 and "fuse" in stdout
    code, stdout, _ = run(capsys, "fuse", "--help")
    assert code == 0
    for option in OPTIONS:
        assert option in stdout
    assert "(default: pdmnet)" in stdout and "(default: auto)" in stdout


def test_python_dash_m(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-m", "napari_pdmfuse", "fuse", str(tmp_path / "none.tif"), "-o",
         str(tmp_path / "f.tif")],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"pdmfuse: error: Input {tmp_path / 'none.tif'} does not exist; check the path."
    ]


# ---------------------------------------------------------------------------------------------
# Signals: a real run stopped mid-way leaves no output, at most a named temporary file


def _slow_stack(folder: Path) -> Path:
    """120 planes of 512², fused with pyramid in 16 tiles: long enough to be stopped mid-way,
    even where the test itself waits for the CPU a while before it sends the signal."""
    rng = np.random.default_rng(5)
    data = rng.integers(0, 255, (120, 512, 512), dtype=np.uint8)
    path = folder / "slow.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZYX"})
    return path


def _start(stack: Path, out: Path, method: str = "pyramid") -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "napari_pdmfuse", "fuse", str(stack), "-o", str(out / "fused.tif"),
        "--focus-map", str(out / "focus.tif"), "--method", method, "--tile", "160",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _wait_for_tiles(proc: subprocess.Popen, done: int = 1, timeout: float = 300) -> bytes:
    """Read the progress bar until ``done`` tiles are fused; returns what stderr showed."""
    import select
    import time

    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 1.0)
        if ready:
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
            counts = [int(n) for n in re.findall(rb" (\d+)/16 ", seen)]
            if counts and max(counts) >= done:
                return seen
    proc.kill()
    raise AssertionError(f"the run never reached {done} tiles: {seen[-500:]!r}")


def _finish(proc: subprocess.Popen) -> str:
    _, err = proc.communicate(timeout=120)
    return err.decode()


signals_only = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")


@signals_only
@pytest.mark.parametrize(("sig", "code", "word"), [("SIGINT", 130, "interrupted"),
                                                   ("SIGTERM", 143, "terminated")])  # fmt: skip
def test_signal_mid_run_leaves_nothing(tmp_path, sig, code, word):
    import signal

    stack = _slow_stack(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    proc = _start(stack, out)
    _wait_for_tiles(proc)
    assert len(list(out.glob(f".*.pdmfuse-tmp-{proc.pid}-*"))) == 2  # streaming into temps
    proc.send_signal(getattr(signal, sig))
    err = _finish(proc)
    assert proc.returncode == code
    assert err.strip().splitlines()[-1] == f"pdmfuse: {word}; nothing was written."
    assert "Traceback" not in err
    assert list(out.iterdir()) == []


@signals_only
def test_sigkill_leaves_only_named_temps_that_the_next_run_removes(tmp_path):
    stack = _slow_stack(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".other.tif.pdmfuse-tmp-1-abcdef-0123abcd").write_bytes(b"not ours")  # other host
    proc = _start(stack, out)
    _wait_for_tiles(proc)
    proc.kill()
    proc.wait(timeout=60)
    left = sorted(p.name for p in out.iterdir() if "other" not in p.name)
    assert len(left) == 2 and not (out / "fused.tif").exists()
    assert all(re.match(rf"^\.(fused|focus)\.tif\.pdmfuse-tmp-{proc.pid}-", n) for n in left)

    again = _start(stack, out, method="argmax")
    err = _finish(again)
    assert again.returncode == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == [".other.tif.pdmfuse-tmp-1-abcdef-0123abcd", "focus.tif", "fused.tif"]
    assert tifffile.imread(out / "fused.tif").shape == (512, 512)


# ---------------------------------------------------------------------------------------------
# Batch


def _batch_inputs(d: Path) -> list[Path]:
    tifffile.imwrite(d / "grey.ome.tif", stack_of(np.uint16), ome=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(d / "rgb.tif", stack_of(np.uint8, rgb=True, n=3), photometric="rgb")
    planes = d / "planes"
    planes.mkdir()
    for k, plane in enumerate(stack_of(np.uint8, n=3)):
        iio.imwrite(planes / f"z{k}.png", plane)
    (d / "broken.tif").write_bytes(b"II*\x00 this is not a TIFF")
    tifffile.imwrite(d / "flat.tif", stack_of(np.uint8)[0])
    return [d / "grey.ome.tif", d / "broken.tif", d / "rgb.tif", d / "flat.tif", planes]


def test_batch_carries_on_past_bad_stacks(tmp_path, capsys):
    inputs = _batch_inputs(tmp_path)
    out = tmp_path / "results"  # created by the command

    code, stdout, stderr = run(
        capsys, "batch", *inputs, "--out-dir", out, "--method", "argmax", "--focus-map",
        "--confidence",
    )  # fmt: skip

    assert code == 2 and stdout == "" and "Traceback" not in stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{stem}_{kind}.tif"
        for stem in ("grey", "rgb", "planes")
        for kind in ("fused", "focus", "confidence")
    )
    assert tifffile.imread(out / "grey_fused.tif").dtype == np.uint16
    assert tifffile.imread(out / "rgb_fused.tif").shape == (64, 80, 3)
    check_maps(out / "planes_focus.tif", out / "planes_confidence.tif", (64, 80), 3)
    lines = stderr.splitlines()
    summary = lines.index("pdmfuse: batch done: 3 fused, 2 failed:")
    assert lines[summary + 1].startswith(f"pdmfuse:   - {inputs[1]} is not a readable image")
    assert lines[summary + 2].startswith(f"pdmfuse:   - {inputs[3]} holds a single 2-D image")
    assert len(lines) == summary + 3
    errors = [line for line in lines[:summary] if line.startswith("pdmfuse: error: ")]
    assert len(errors) == 2  # each failure reported as it happens too


def test_batch_all_good_exits_0_and_refuses_existing_outputs(tmp_path, capsys):
    inputs = _batch_inputs(tmp_path)
    good = [inputs[0], inputs[2]]
    out = tmp_path / "out"
    out.mkdir()
    (out / "rgb_fused.tif").write_bytes(b"an earlier result")

    code, _, stderr = run(capsys, "batch", *good, "--out-dir", out, "--method", "argmax", "-q")
    assert code == 2 and "rgb_fused.tif already exists" in stderr
    assert (out / "rgb_fused.tif").read_bytes() == b"an earlier result"
    assert (out / "grey_fused.tif").exists()  # the other stack was fused all the same

    code, _, stderr = run(
        capsys, "batch", *good, "--out-dir", out, "--method", "argmax", "-q", "--overwrite"
    )
    assert (code, stderr) == (0, "")
    assert sorted(p.name for p in out.iterdir()) == ["grey_fused.tif", "rgb_fused.tif"]


def test_batch_refuses_up_front(tmp_path, capsys):
    inputs = _batch_inputs(tmp_path)
    (tmp_path / "other").mkdir()
    tifffile.imwrite(tmp_path / "other" / "rgb.tiff", stack_of(np.uint8, n=2))
    cases = [
        ([inputs[2], tmp_path / "other" / "rgb.tiff"], "would both be written to"),
        ([inputs[0], inputs[0]], "given twice"),
        ([inputs[0], "--tile", "8"], "use a tile of at least 16 px"),
        ([inputs[0], "--weights", tmp_path / "w.pt"], "apply to the pdmnet method only"),
    ]
    for args, words in cases:
        code, _, stderr = run(
            capsys, "batch", *args, "--out-dir", tmp_path / "out", "--method", "argmax"
        )
        assert code == 2 and words in stderr and stderr.count("\n") == 1, stderr
        assert not (tmp_path / "out").exists()  # refused before anything, folder included


def test_batch_output_folder_may_not_be_a_plane_folder(tmp_path, capsys):
    inputs = _batch_inputs(tmp_path)
    planes = inputs[-1]
    code, _, stderr = run(capsys, "batch", planes, "--out-dir", planes, "--method", "argmax")
    assert code == 2 and "inside the input folder" in stderr
    assert sorted(p.name for p in planes.iterdir()) == ["z0.png", "z1.png", "z2.png"]


def test_batch_help(capsys):
    code, stdout, _ = run(capsys, "batch", "--help")
    assert code == 0
    for option in ("--out-dir", "--focus-map", "--confidence", "--method", "--weights", "--tile"):
        assert option in stdout
    assert "<stem>_fused.tif" in stdout


# ---------------------------------------------------------------------------------------------
# Weights and warnings


def test_user_weights_with_a_matching_card_are_used(tmp_path, capsys):
    import shutil

    from napari_pdmfuse.model.weights import WEIGHTS_PATH, sha256

    shutil.copy(WEIGHTS_PATH, tmp_path / "mine.pt")
    (tmp_path / "mine.json").write_text(f'{{"sha256": "{sha256(WEIGHTS_PATH)}"}}')
    tifffile.imwrite(tmp_path / "stack.tif", stack_of(np.uint8, n=3), photometric="minisblack")
    code, _, stderr = run(
        capsys, "fuse", tmp_path / "stack.tif", "-o", tmp_path / "f.tif", "--method", "pdmnet",
        "--device", "cpu", "--weights", tmp_path / "mine.pt", "-q",
    )  # fmt: skip
    assert (code, stderr) == (0, "")

    (tmp_path / "mine.pt").write_bytes((tmp_path / "mine.pt").read_bytes() + b"\0")
    code, _, stderr = run(
        capsys, "fuse", tmp_path / "stack.tif", "-o", tmp_path / "g.tif", "--method", "pdmnet",
        "--weights", tmp_path / "mine.pt", "-q",
    )  # fmt: skip
    assert code == 2 and "do not match the SHA-256 recorded in mine.json" in stderr
    assert not (tmp_path / "g.tif").exists()


def test_damaged_tags_are_one_warning_line(tmp_path, capsys):
    path = tmp_path / "odd.tif"
    tifffile.imwrite(path, stack_of(np.uint8, n=3), photometric="minisblack")
    blob = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages.first.tags["Software"]
    blob[tag.offset + 4 : tag.offset + 8] = struct.pack("<I", 2**31)  # count: far past the end
    path.write_bytes(bytes(blob))

    out = tmp_path / "f.tif"
    code, _, stderr = run(capsys, "fuse", path, "-o", out, "--method", "argmax", "-q")
    assert code == 0
    assert stderr.splitlines() == [
        f"pdmfuse: warning: {path} has damaged TIFF tags or pages that were skipped; check the "
        "fused result, or export the stack again."
    ]
