"""Every bad input a user can meet, the exact message they see, and docs/ERRORS.md made from them.

Each case is run for real (the CLI in-process, in a scratch folder, with relative paths); the
test checks the contract (exit status 2, one line, one sentence, nothing written) and that
docs/ERRORS.md is exactly the table these runs produce. After changing a message, regenerate it:

    python tests/test_errors.py
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import struct
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import dask.array as da
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import torch
import zarr
from fault_runs import FAULTS, NO_WORKER_TIMEOUT, WARNINGS, Fault, Seen

from napari_pdmfuse import InputError, PdmFuseError, fuse, sizes
from napari_pdmfuse.cli import main
from napari_pdmfuse.model.weights import WEIGHTS_PATH

DOC = Path(__file__).resolve().parents[1] / "docs" / "ERRORS.md"

#: The machine the table describes: fixed, so the numbers in the messages do not depend on ours.
FREE_DISK = 10 * 2**30
FREE_MEMORY = 16 * 2**30

STACK = (np.random.default_rng(0).random((3, 24, 28)) * 250).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Builders: each makes files in the current folder and returns the pdmfuse arguments


def tif(name: str, data: np.ndarray, **kwargs: object) -> str:
    tifffile.imwrite(name, data, **kwargs)
    return name


def good(name: str = "stack.tif") -> str:
    return tif(name, STACK, imagej=True, metadata={"axes": "ZYX"})


def dimming() -> np.ndarray:
    """STACK with its last plane three times brighter (as uint16, so nothing overflows)."""
    return STACK * np.uint16([1, 1, 3])[:, None, None]


def time_lapse(name: str = "lapse.tif") -> str:
    return tif(name, np.stack([STACK, STACK]), imagej=True, metadata={"axes": "TZYX"})


def two_channels(name: str = "zcyx.tif") -> str:
    return tif(name, np.stack([STACK, STACK], axis=1), imagej=True, metadata={"axes": "ZCYX"})


def rgb_stack(name: str = "rgb.tif") -> str:
    rgb = np.repeat(STACK.astype(np.uint8)[..., None], 3, axis=-1)
    return tif(name, rgb, photometric="rgb")


def two_images(name: str = "wells.ome.tif") -> str:
    """An OME-TIFF holding two images, A1 and B2."""
    with tifffile.TiffWriter(name, ome=True) as handle:
        for well in ("A1", "B2"):
            handle.write(STACK, metadata={"axes": "ZYX", "Name": well})
    return name


def plate_without_wells(name: str = "plate.ome.zarr") -> str:
    """An OME-Zarr plate whose metadata lists a well the store does not hold."""
    zarr.open_group(name, mode="w", zarr_format=2).attrs["plate"] = {"wells": [{"path": "A/1"}]}
    return name


def empty_folder(name: str) -> str:
    os.mkdir(name)
    return name


def fuse_args(*inputs: str, out: str = "fused.tif", method: str = "argmax") -> list[str]:
    return ["fuse", *inputs, "-o", out, "--method", method]


def folder(name: str, planes: dict[str, np.ndarray | bytes]) -> str:
    Path(name).mkdir()
    for file, plane in planes.items():
        if isinstance(plane, bytes):
            Path(name, file).write_bytes(plane)
        else:
            iio.imwrite(Path(name, file), plane)
    return name


def truncated() -> list[str]:
    blob = Path(good("whole.tif")).read_bytes()
    Path("truncated.tif").write_bytes(blob[: len(blob) // 2])
    os.remove("whole.tif")
    return fuse_args("truncated.tif")


def patched_header(name: str, ifd_offset: int) -> list[str]:
    blob = bytearray(Path(good(name)).read_bytes())
    blob[4:8] = struct.pack("<I", ifd_offset)
    Path(name).write_bytes(bytes(blob))
    return fuse_args(name)


def damaged_pixels() -> list[str]:
    """A compressed stack whose header is fine but whose second plane's tiles are garbage."""
    data = np.tile(STACK, (1, 4, 4))
    tif("damaged.tif", data, photometric="minisblack", compression="zlib", tile=(32, 32))
    with tifffile.TiffFile("damaged.tif") as handle:
        offsets = handle.pages[1].dataoffsets
    with open("damaged.tif", "r+b") as handle:
        for offset in offsets:
            handle.seek(offset)
            handle.write(b"\xff" * 8)
    return fuse_args("damaged.tif")


def damaged_zarr() -> list[str]:
    """A zarr array whose metadata is fine but whose second plane's chunks are garbage."""
    import zarr

    data = np.tile(STACK, (1, 4, 4))
    store = zarr.create_array("damaged.zarr", shape=data.shape, chunks=(1, 32, 32),
                              dtype=data.dtype, zarr_format=2)  # fmt: skip
    store[...] = data
    for chunk in Path("damaged.zarr").glob("1.*"):
        chunk.write_bytes(b"\xff" * 8)
    return fuse_args("damaged.zarr")


def sparse_stack(name: str, shape: tuple[int, ...], dtype: type) -> str:
    """A TIFF of ``shape`` whose pixels take no disk space (a sparse, all-zero file)."""
    array = tifffile.memmap(name, shape=shape, dtype=dtype, photometric="minisblack")
    array.flush()
    del array
    return name


def float_stack(name: str, value: float, dtype: type = np.float32) -> str:
    data = STACK.astype(dtype)
    data[1, 3, 4] = value
    return tif(name, data, photometric="minisblack")


def weights_with_card(sha: str) -> list[str]:
    shutil.copy(WEIGHTS_PATH, "mine.pt")
    Path("mine.json").write_text(f'{{"sha256": "{sha}"}}\n')
    return [*fuse_args(good(), method="pdmnet"), "--weights", "mine.pt"]


class _RunsCode:
    """A pickle that would create a file if loaded with weights_only=False."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch pwned",))


def malicious_weights() -> list[str]:
    torch.save({"widths": [8, 16, 32, 48], "state": _RunsCode()}, "evil.pt")
    return [*fuse_args(good(), method="pdmnet"), "--weights", "evil.pt"]


def existing(name: str) -> str:
    Path(name).write_bytes(b"an earlier result")
    return name


@dataclass(frozen=True)
class CliCase:
    what: str
    make: Callable[[], list[str]]
    needs_no_cuda: bool = False
    memory_limit_left: int | None = None  # what a memory limit (ulimit -v, a cgroup's) leaves


CLI_CASES = [
    CliCase("Input file missing", lambda: fuse_args("missing.tif")),
    CliCase("Not an image (text named .tif)", lambda: _text("notes.tif")),
    CliCase("Empty file", lambda: _text("empty.tif", b"")),
    CliCase("Truncated TIFF", truncated),
    CliCase("TIFF with no pages (first page offset 0)", lambda: patched_header("nopages.tif", 0)),
    CliCase("TIFF pointing past its end", lambda: patched_header("pastend.tif", 10**8)),
    CliCase("Pixel data damaged (found mid-run)", damaged_pixels),
    CliCase("Zarr chunks damaged (found mid-run)", damaged_zarr),
    CliCase("A single 2-D image", lambda: fuse_args(tif("one.tif", STACK[0]))),
    CliCase(
        "A stack with one slice (Z = 1)",
        lambda: fuse_args(tif("z1.tif", STACK[:1], imagej=True, metadata={"axes": "ZYX"})),
    ),
    CliCase("One plane file only", lambda: fuse_args(_png("one.png", STACK[0]))),
    CliCase(
        "Folder without images", lambda: fuse_args(folder("empty", {"notes.txt": b"no planes"}))
    ),
    CliCase("Folder with one image", lambda: fuse_args(folder("single", {"z1.png": STACK[0]}))),
    CliCase(
        "Folder with planes of different sizes",
        lambda: fuse_args(folder("mixed", {"z1.png": STACK[0], "z2.png": STACK[1, :, :20]})),
    ),
    CliCase(
        "Folder with a damaged plane",
        lambda: fuse_args(folder("broken", {"z1.png": STACK[0], "z2.png": b"not a png"})),
    ),
    CliCase(
        "Planes of different data types",
        lambda: fuse_args(tif("a.tif", STACK[0]), tif("b.tif", STACK[1].astype(np.uint16))),
    ),
    CliCase(
        "Planes with different channel counts (grey and RGB)",
        lambda: fuse_args(_png("grey.png", STACK[0]), _png("rgb.png", _rgb(STACK[1]))),
    ),
    CliCase(
        "A plane file that holds a stack",
        lambda: fuse_args(tif("a.tif", STACK[0]), tif("s.tif", STACK)),
    ),
    CliCase("A file given twice", lambda: fuse_args(good("a.tif"), "a.tif")),
    CliCase(
        "A folder given with other inputs",
        lambda: fuse_args(folder("planes", {"z1.png": STACK[0]}), good()),
    ),
    CliCase(
        "Unlabelled axes besides Y and X (a plain 4-D TIFF)",
        lambda: fuse_args(tif("plain.tif", np.stack([STACK] * 2), photometric="minisblack")),
    ),
    CliCase(
        "--axes that do not fit the file",
        lambda: [*fuse_args(tif("plain.tif", STACK, photometric="minisblack")), "--axes", "TZYX"],
    ),
    CliCase(
        "--axes with an unknown letter (argparse)", lambda: [*fuse_args(good()), "--axes", "ZQYX"]
    ),
    CliCase(
        "Focus map in µm, but the file has no Z step",
        lambda: [*fuse_args(good()), "--focus-units", "um"],
    ),
    CliCase(
        "--z-spacing with --focus-units slices",
        lambda: [*fuse_args(good()), "--focus-units", "slices", "--z-spacing", "0.5"],
    ),
    CliCase(
        "--coverage without --align", lambda: [*fuse_args(good()), "--coverage", "coverage.tif"]
    ),
    CliCase(
        "--focus-channel beyond the channels",
        lambda: [*fuse_args(two_channels()), "--focus-channel", "2"],
    ),
    CliCase(
        "--channel-mode separate on a grey stack",
        lambda: [*fuse_args(good()), "--channel-mode", "separate"],
    ),
    CliCase(
        "--focus-channel with --channel-mode separate",
        lambda: [
            *fuse_args(two_channels()),
            "--channel-mode",
            "separate",
            "--focus-channel",
            "0",
        ],
    ),
    CliCase(
        "Stack without a Z axis",
        lambda: fuse_args(tif("tyx.tif", STACK, imagej=True, metadata={"axes": "TYX"})),
    ),
    CliCase(
        "--correct-brightness on planes three times apart",
        lambda: [
            *fuse_args(tif("dim.tif", dimming(), imagej=True, metadata={"axes": "ZYX"})),
            "--correct-brightness",
        ],
    ),
    CliCase("NaN values", lambda: fuse_args(float_stack("nan.tif", np.nan))),
    CliCase("Infinite values", lambda: fuse_args(float_stack("inf.tif", -np.inf))),
    CliCase(
        "Values beyond float32 (float64 data)",
        lambda: fuse_args(float_stack("big.tif", 1e300, np.float64)),
    ),
    CliCase(
        "Boolean data",
        lambda: fuse_args(tif("mask.tif", STACK > 100, photometric="minisblack")),
    ),
    CliCase(
        "Complex data",
        lambda: fuse_args(tif("fft.tif", STACK.astype(np.complex64), photometric="minisblack")),
    ),
    CliCase(
        "Outputs larger than the free disk space (10 GiB here)",
        lambda: [
            *fuse_args(sparse_stack("huge.tif", (2, 40_000, 40_000), np.uint16)),
            "--focus-map",
            "focus.tif",
            "--confidence",
            "confidence.tif",
        ],
    ),
    CliCase(
        "Tile smaller than the method's context",
        lambda: [*fuse_args(good(), method="wavelet"), "--tile", "32"],
    ),
    CliCase(
        "CUDA requested but absent",
        lambda: [*fuse_args(good(), method="pdmnet"), "--device", "cuda"],
        needs_no_cuda=True,
    ),
    CliCase(
        "Weights file missing",
        lambda: [*fuse_args(good(), method="pdmnet"), "--weights", "nowhere.pt"],
    ),
    CliCase(
        "Weights that do not match the SHA-256 on their card",
        lambda: weights_with_card("0" * 64),
    ),
    CliCase("Weights that would run code when unpickled", malicious_weights),
    CliCase(
        "Weights for a method other than pdmnet",
        lambda: [*fuse_args(good(), method="wavelet"), "--weights", WEIGHTS_PATH.name],
    ),
    CliCase(
        "Hard selection with a method other than pdmnet",
        lambda: [*fuse_args(good(), method="wavelet"), "--selection", "hard"],
    ),
    CliCase("Retouch mask missing", lambda: [*fuse_args(good()), "--retouch", "missing-mask.tif"]),
    CliCase(
        "Retouch mask of another size than the result",
        lambda: [*fuse_args(good()), "--retouch", tif("mask.tif", np.zeros((24, 27), np.uint8))],
    ),
    CliCase(
        "Retouch label above the plane count that the mask names no fusion for",
        lambda: [*fuse_args(good()), "--retouch", tif("mask.tif", np.full((24, 28), 4, np.uint8))],
    ),
    CliCase(
        "3-D model not named .glb, .ply or .stl", lambda: [*fuse_args(good()), "--mesh", "m.obj"]
    ),
    CliCase(
        "3-D model of a time-lapse (one focus map per time point)",
        lambda: [*fuse_args(time_lapse()), "--mesh", "m.glb"],
    ),
    CliCase("Output exists (no --overwrite)", lambda: fuse_args(good(), out=existing("old.tif"))),
    CliCase("Output is an input", lambda: fuse_args(good(), out="stack.tif")),
    CliCase(
        "Output inside the input folder",
        lambda: fuse_args(
            folder("planes", {"z1.png": STACK[0], "z2.png": STACK[1]}), out="planes/fused.tif"
        ),
    ),
    CliCase("Output not named .tif", lambda: fuse_args(good(), out="fused.png")),
    CliCase(
        "Output name longer than the file system allows (256 bytes)",
        lambda: fuse_args(good(), out="f" * 252 + ".tif"),
    ),
    CliCase("Output folder missing", lambda: fuse_args(good(), out="results/fused.tif")),
    CliCase(
        "OME-Zarr output named like a folder that is no zarr store",
        lambda: fuse_args(good(), out=empty_folder("fused.ome.zarr")),
    ),
    CliCase(
        "A type OME-XML lacks (int64, uint64, float16) into an OME-TIFF",
        lambda: fuse_args(
            tif("deep.tif", STACK.astype(np.int64), photometric="minisblack"), out="f.ome.tif"
        ),
    ),
    CliCase(
        "A memory limit (ulimit -v, a cgroup's) below what the smallest tiles need",
        lambda: fuse_args(good(), method="pdmnet"),
        memory_limit_left=300 * 2**20,
    ),
    CliCase(
        "Channels fused separately on an RGB stack",
        lambda: [*fuse_args(rgb_stack()), "--channel-mode", "separate"],
    ),
    CliCase(
        "Output named twice", lambda: [*fuse_args(good(), out="f.tif"), "--focus-map", "f.tif"]
    ),
    CliCase(
        "Unknown method (argparse)", lambda: ["fuse", good(), "-o", "f.tif", "--method", "best"]
    ),
    CliCase("Tile not a positive number (argparse)", lambda: [*fuse_args(good()), "--tile", "0"]),
    CliCase("Unknown selection (argparse)", lambda: [*fuse_args(good()), "--selection", "soft"]),
    CliCase(
        "batch: two inputs that would give the same output names",
        lambda: ["batch", good("a.tif"), folder("a", {}), "--out-dir", "out"],
    ),
    CliCase(
        "batch: --out-dir is a file",
        lambda: ["batch", good(), "--out-dir", existing("out.tif")],
    ),
    CliCase("A scene the file does not have", lambda: [*fuse_args(two_images()), "--scene", "C3"]),
    CliCase("OME-Zarr plate whose wells are missing", lambda: fuse_args(plate_without_wells())),
    CliCase(
        "batch: report not named .html",
        lambda: ["batch", good(), "--out-dir", "out", "--report", "report.txt"],
    ),
    CliCase(
        "batch: report would replace a file that is no report",
        lambda: ["batch", good(), "--out-dir", "out", "--report", existing("notes.html")],
    ),
    CliCase("watch: folder missing", lambda: ["watch", "incoming", "--out-dir", "out"]),
    CliCase(
        "watch: results into the watched folder",
        lambda: ["watch", empty_folder("incoming"), "--out-dir", "incoming"],
    ),
]


def _text(name: str, content: bytes = b"not an image\n") -> list[str]:
    Path(name).write_bytes(content)
    return fuse_args(name)


def _png(name: str, plane: np.ndarray) -> str:
    iio.imwrite(name, plane)
    return name


def _rgb(plane: np.ndarray) -> np.ndarray:
    return np.repeat(plane[..., None], 3, axis=-1)


# ---------------------------------------------------------------------------------------------
# Python API cases: (what, call, exception class)


@dataclass(frozen=True)
class ApiCase:
    what: str
    call: Callable[[], object]
    error: type[PdmFuseError]
    needs_no_cuda: bool = False


def _fuse(data: object, **options: object) -> Callable[[], object]:
    return lambda: fuse(data, **{"method": "argmax", **options})


def _nan_stack(value: float) -> np.ndarray:
    data = STACK.astype(np.float32)
    data[0, 1, 2] = value
    return data


API_CASES = [
    ApiCase("A 2-D image", _fuse(STACK[0]), InputError),
    ApiCase("One slice (Z = 1)", _fuse(STACK[:1]), InputError),
    ApiCase("A zero-size axis", _fuse(np.zeros((3, 0, 8), np.uint8)), InputError),
    ApiCase("An RGB image, not a stack", _fuse(_rgb(STACK[0])), InputError),
    ApiCase("Five axes", _fuse(STACK[None, ..., None]), InputError),
    ApiCase("z_axis out of range", _fuse(STACK, z_axis=3), InputError),
    ApiCase("Same Z and channel axis", _fuse(STACK, channel_axis=0), InputError),
    ApiCase("Boolean data", _fuse(STACK > 100), InputError),
    ApiCase("Complex data", _fuse(STACK.astype(np.complex64)), InputError),
    ApiCase("NaN values", _fuse(_nan_stack(np.nan)), InputError),
    ApiCase("Infinite values", _fuse(_nan_stack(np.inf)), InputError),
    ApiCase("Values beyond float32", _fuse(STACK.astype(np.float64) * 1e300), InputError),
    ApiCase("Planes of different shapes", _fuse([STACK[0], STACK[1, :, :20]]), InputError),
    ApiCase(
        "Planes of different data types",
        _fuse([STACK[0], STACK[1].astype(np.uint16)]),
        InputError,
    ),
    ApiCase("Planes with different channel counts", _fuse([STACK[0], _rgb(STACK[1])]), InputError),
    ApiCase("Fewer than two planes", _fuse([STACK[0]]), InputError),
    ApiCase(
        "A side over 2^31 px",
        _fuse(da.zeros((2, 4, 2**31), np.uint8, chunks=(1, 4, 2**20))),
        InputError,
    ),
    ApiCase(
        "Results larger than the free memory (16 GiB here)",
        _fuse(da.zeros((2, 60_000, 60_000), np.uint8, chunks=(1, 4096, 4096))),
        InputError,
    ),
    ApiCase("Unknown method", _fuse(STACK, method="best"), InputError),
    ApiCase("Unknown device", _fuse(STACK, device="tpu"), InputError),
    ApiCase(
        "CUDA requested but absent",
        _fuse(STACK, method="pdmnet", device="cuda"),
        InputError,
        needs_no_cuda=True,
    ),
    ApiCase("Tile smaller than the method's context", _fuse(STACK, tile=8), InputError),
    ApiCase("Weights for another method", _fuse(STACK, weights="w.pt"), InputError),
    ApiCase("Hard selection for another method", _fuse(STACK, selection="hard"), InputError),
    ApiCase("Unknown selection", _fuse(STACK, method="pdmnet", selection="soft"), InputError),
    ApiCase(
        "Weights file missing", _fuse(STACK, method="pdmnet", weights="nowhere.pt"), InputError
    ),
]


# ---------------------------------------------------------------------------------------------
# Running the cases


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A fresh current folder, and the fixed machine the table describes."""
    previous = Path.cwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            with (
                mock.patch.object(sizes, "free_disk", lambda folder: FREE_DISK),
                mock.patch.object(sizes, "available_memory", lambda: FREE_MEMORY),
                mock.patch.object(sizes, "limit_left", lambda: None),
            ):
                yield Path(tmp)
        finally:
            os.chdir(previous)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
    }


@dataclass(frozen=True)
class CliRun:
    code: int
    stdout: str
    stderr: str
    before: dict[str, tuple[int, int]]
    after: dict[str, tuple[int, int]]
    args: list[str]

    @property
    def message(self) -> str:
        return self.stderr.strip().splitlines()[-1]


def run_cli(case: CliCase) -> CliRun:
    limit = mock.patch.object(sizes, "limit_left", lambda: case.memory_limit_left)
    with scratch() as here, limit:
        args = case.make()
        before = snapshot(here)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([*args, "--quiet"] if args[0] != "batch" else args)
        return CliRun(code, out.getvalue(), err.getvalue(), before, snapshot(here), args)


def run_api(case: ApiCase) -> PdmFuseError:
    with scratch():
        try:
            case.call()
        except PdmFuseError as err:
            return err
    raise AssertionError(f"{case.what}: no error")


def run_fault(case: Fault) -> Seen:
    with scratch():
        return case.run()


def one_sentence(message: str) -> bool:
    return ". " not in re.sub(r"\b(e\.g|i\.e)\. ", "", message)


def skipped(case: CliCase | ApiCase) -> bool:
    return case.needs_no_cuda and torch.cuda.is_available()


#: The one line each stop prints (exit status → line).
STOPPED = {
    130: "pdmfuse: interrupted; nothing was written.",
    143: "pdmfuse: terminated; nothing was written.",
}


# ---------------------------------------------------------------------------------------------
# The contract


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.what for c in CLI_CASES])
def test_cli_refusal_is_one_line_exit_2_and_writes_nothing(case):
    if skipped(case):
        pytest.skip("a CUDA GPU is present")
    run = run_cli(case)
    assert run.code == 2 and run.stdout == ""
    assert "Traceback" not in run.stderr
    if "(argparse)" in case.what:
        command = run.args[0]  # the subcommand whose usage argparse prints
        assert run.stderr.startswith("usage: ")
        assert run.message.startswith(f"pdmfuse {command}: error:")
    else:
        assert run.stderr.count("\n") == 1 and run.stderr.startswith("pdmfuse: error: ")
        assert run.message.endswith(".") and one_sentence(run.message)
    assert run.after == run.before  # nothing written or touched, no temporary file left


@pytest.mark.parametrize("case", API_CASES, ids=[c.what for c in API_CASES])
def test_api_refusal_is_our_error_and_one_sentence(case):
    if skipped(case):
        pytest.skip("a CUDA GPU is present")
    err = run_api(case)
    assert isinstance(err, case.error)
    assert isinstance(err, ValueError if case.error is InputError else OSError)
    message = str(err)
    assert "\n" not in message and message.endswith(".") and one_sentence(message)
    assert err.__cause__ is None


@pytest.mark.parametrize("case", FAULTS, ids=[c.what for c in FAULTS])
def test_a_fault_mid_run_is_one_line_and_leaves_only_whole_outputs(case):
    if case.posix and os.name != "posix":
        pytest.skip("POSIX signals and descriptors")
    seen = run_fault(case)
    assert seen.code == case.code and seen.stdout == "", seen
    assert "Traceback" not in seen.stderr
    if case.code == 2:
        assert len(seen.lines) == 1 and seen.lines[0].startswith("pdmfuse: error: ")
        assert seen.lines[0].endswith(".") and one_sentence(seen.lines[0])
    elif case.code in STOPPED:
        assert seen.lines == [STOPPED[case.code]]
    else:
        assert seen.stderr == ""
    assert seen.left == list(case.left)  # no partial output, no temporary file


@pytest.mark.parametrize("case", WARNINGS, ids=[c.what for c in WARNINGS])
def test_a_warning_is_one_line_and_the_run_completes(case):
    seen = run_fault(case)
    assert seen.code == 0 and seen.stdout == "" and seen.left == list(case.left)
    assert len(seen.lines) == 1 and seen.lines[0].startswith("pdmfuse: warning: ")
    assert "Traceback" not in seen.stderr


def test_malicious_weights_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = malicious_weights()
    assert main([*args, "--quiet"]) == 2
    assert not (tmp_path / "pwned").exists()


def test_a_good_card_is_accepted(tmp_path, monkeypatch):
    from napari_pdmfuse.model.weights import load_model, sha256

    monkeypatch.chdir(tmp_path)
    weights_with_card(sha256(WEIGHTS_PATH))
    assert load_model("mine.pt").widths == load_model().widths


def test_errors_md_is_the_table_these_cases_produce():
    if torch.cuda.is_available():
        pytest.skip("the table describes a machine without CUDA")
    assert DOC.read_text() == document(), "run: python tests/test_errors.py"


# ---------------------------------------------------------------------------------------------
# docs/ERRORS.md


HEADER = """# What pdmfuse says about bad input

Generated by `python tests/test_errors.py` from real runs (`tests/test_errors.py` checks that this
file is up to date), but for its last section, the results of `benchmarks/fuzz.py`. Every
refusal is one sentence that names the file or option and what to do.
The command line prints it after `pdmfuse: error: ` and exits with status 2, before writing
anything; the Python API raises it as `InputError` (a `ValueError`) for the stack or options,
`ReadError` for input files and `OutputError` for output files (both `OSError`), all subclasses
of `napari_pdmfuse.PdmFuseError`. The numbers below are for a machine with {disk} GiB of free disk
and {memory} GiB of free memory, and paths are as typed. Usage errors found by argparse (an
unknown `--method`, say) print the usage line first.

Nothing is ever written over an input or an existing output (without `--overwrite`); outputs are
written to hidden temporary files, `.NAME.pdmfuse-tmp-PID-HOST-TOKEN`, beside them and renamed
into place when complete, so an error, Ctrl-C or SIGTERM leaves no partial file. A run killed
outright (SIGKILL, power loss) can leave such a temporary file, never a file at the output's name;
the next run in that folder removes it once the process named in it is gone.

Not errors: file names holding bytes that are not UTF-8, newlines or terminal escapes fuse like
any other, and messages, napari layer names and output metadata show those characters escaped
(`\\xff`, `\\n`, `\\x1b`). A stack whose slices are each constant (all alike or all
different) fuses to a valid image with zero confidence everywhere; pixels with no texture in any
plane within a method's reach get zero confidence too. Values near the float32 limits are fused
(scaled internally by a power of two). A TIFF whose tags or pages had to be skipped is fused with
the warning
`pdmfuse: warning: FILE has damaged TIFF tags or pages that were skipped; check the fused result,
or export the stack again.`; if the GPU runs out of memory, tiles are halved (down to the method's
minimum) and then the run moves to the CPU, each with a warning.

## Command line

| Bad input | Exit | What the user sees |
|---|---|---|
"""

FAULTS_HEADER = """
## Faults during a run

Things that go wrong around a run that started well, each made to happen mid-run: another run
writing the same name, a disk that fills up (the check ahead found room), a stop signal, a closed
stderr, a cluster without workers (which waits {timeout:g} s for one here; 60 s unless
`PDMFUSE_NO_WORKER_TIMEOUT` says otherwise). Exit status 143 is the shell's 128 + SIGTERM, for
SIGHUP too, and 130 is Ctrl-C's. After every failure the folder holds no new file and no
temporary file; the output another run wrote is left as it wrote it.

| Fault | Exit | What the user sees |
|---|---|---|
"""

WARNINGS_HEADER = """
## Warnings

The run completes and writes its outputs; the warning is one line on stderr.

| Input | Exit | What the user sees |
|---|---|---|
"""

BATCH = """
## Batch

`pdmfuse batch` carries on past a stack that fails, prints its error at once, and ends with a
summary and exit status 2 (1 if a stack failed on an unexpected error, which is a bug):

```text
{batch}
```

Run again, it keeps the stacks fused with the same options and refuses outputs made with
others:

```text
{rerun}
```

## Python API

| Bad input | Exception | Message |
|---|---|---|
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _code(text: str) -> str:
    """A Markdown code span that may itself hold backticks."""
    return f"`` {_cell(text)} ``" if "`" in text else f"`{_cell(text)}`"


def _shown(args: list[str]) -> list[str]:
    """A command as typed, what it printed on stderr and its exit status."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(args)
    return [f"$ pdmfuse {' '.join(args)}", err.getvalue().strip(), "$ echo $?", str(code)]


def batch_examples() -> tuple[str, str]:
    """A batch with failures, then two reruns: the same options, and another method."""
    args = ["batch", "good.tif", "notes.tif", "missing.tif", "--out-dir", "out", "--quiet"]
    with scratch():
        good("good.tif")
        Path("notes.tif").write_text("not an image\n")
        first = _shown(args)
        written = ["$ ls out", *sorted(p.name for p in Path("out").iterdir())]
        rerun = _shown(["batch", "good.tif", "--out-dir", "out"])
        rerun += _shown(["batch", "good.tif", "--out-dir", "out", "--method", "argmax"])
    return "\n".join([*first, *written]), "\n".join(rerun)


def _seen(seen: Seen) -> str:
    """A fault's cell: its one line, or, where it printed nothing, what it wrote."""
    if seen.lines:
        return _code(seen.lines[-1])
    written = ", ".join(f"`{name}`" for name in seen.left)
    return f"nothing printed; {written} written"


#: Where docs/ERRORS.md's generated part ends: what follows is written by hand from the
#: fuzzing benchmark's run (``benchmarks/fuzz.py``), and kept as it is.
MEASURED = "\n## Damaged inputs by the thousand\n"


def measured() -> str:
    text = DOC.read_text() if DOC.exists() else ""
    return text[text.find(MEASURED) :] if MEASURED in text else ""


def document() -> str:
    rows = []
    for case in CLI_CASES:
        run = run_cli(case)
        rows.append(f"| {_cell(case.what)} | {run.code} | {_code(run.message)} |")
    faults = []
    for fault in FAULTS:
        seen = run_fault(fault)
        faults.append(f"| {_cell(fault.what)} | {seen.code} | {_seen(seen)} |")
    warned = []
    for fault in WARNINGS:
        seen = run_fault(fault)
        warned.append(f"| {_cell(fault.what)} | {seen.code} | {_seen(seen)} |")
    api_rows = []
    for case in API_CASES:
        err = run_api(case)
        api_rows.append(f"| {_cell(case.what)} | `{type(err).__name__}` | {_cell(str(err))} |")
    header = HEADER.format(disk=FREE_DISK // 2**30, memory=FREE_MEMORY // 2**30)
    return (
        header
        + "\n".join(rows)
        + "\n"
        + FAULTS_HEADER.format(timeout=NO_WORKER_TIMEOUT)
        + "\n".join(faults)
        + "\n"
        + WARNINGS_HEADER
        + "\n".join(warned)
        + "\n"
        + BATCH.format(**dict(zip(("batch", "rerun"), batch_examples(), strict=True)))
        + "\n".join(api_rows)
        + "\n"
        + measured()
    )


if __name__ == "__main__":
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(document())
    print(f"wrote {DOC}", file=sys.stderr)
