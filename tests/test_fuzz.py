"""Fuzzing: random stacks through the API, damaged TIFFs through reader and CLI, and a slice of
the seeded corpus of damaged inputs of every kind (tests/fuzz_corpus.py).

Hypothesis runs derandomized with a fixed budget, so CI sees the same examples every time.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import fuzz_corpus
import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from napari_pdmfuse import METHODS, InputError, PdmFuseError, ReadError, fuse
from napari_pdmfuse.cli import main
from napari_pdmfuse.reading import open_image

DTYPES = [np.uint8, np.uint16, np.int16, np.float32, np.float64]


def extremes(dtype: type) -> list[float]:
    """Values at the edges of ``dtype``: zero, min, max, and for floats huge and denormal ones."""
    if np.dtype(dtype).kind in "ui":
        info = np.iinfo(dtype)
        return [0, 1, info.min, info.max, info.max - 1]
    tiny = float(np.finfo(np.float32).smallest_subnormal)
    big = float(np.finfo(np.float32).max)
    return [0.0, -0.0, 1e30, -1e30, tiny, -tiny, big, -big, 1.0, 1e-30]


@st.composite
def stacks(draw: st.DrawFn) -> np.ndarray:
    dtype = draw(st.sampled_from(DTYPES))
    z = draw(st.integers(2, 6))
    y = draw(st.integers(1, 40))
    x = draw(st.integers(1, 40))
    # A trailing 3 or 4 on a (Z, Y, X) array with Z, Y > 4 reads as one RGB image: refused.
    assume(not (x in (3, 4) and min(z, y) > 4))
    kind = draw(st.sampled_from(["random", "extremes", "constant", "mixed"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    values = extremes(dtype)
    if kind == "constant":
        planes = [np.full((y, x), draw(st.sampled_from(values))) for _ in range(z)]
        return np.stack(planes).astype(dtype)
    if kind == "extremes":
        return rng.choice(np.array(values, dtype=dtype), size=(z, y, x))
    if np.dtype(dtype).kind == "f":
        data = rng.normal(0, 1, (z, y, x)) * 10.0 ** draw(st.integers(-30, 30))
    else:
        info = np.iinfo(dtype)
        data = rng.integers(info.min, info.max, (z, y, x), endpoint=True)
    data = data.astype(dtype)
    if kind == "mixed":  # sprinkle extreme values into random data
        mask = rng.random(data.shape) < 0.1
        data[mask] = rng.choice(np.array(values, dtype=dtype), size=int(mask.sum()))
    return data


def check_result(stack: np.ndarray, method: str) -> None:
    result = fuse(stack, method=method, device="cpu")
    n = stack.shape[0]
    assert result.fused.dtype == stack.dtype
    assert result.fused.shape == stack.shape[1:]
    assert np.isfinite(result.fused).all()
    assert result.focus_map.shape == result.confidence.shape == stack.shape[1:]
    assert np.isfinite(result.focus_map).all() and np.isfinite(result.confidence).all()
    assert result.focus_map.min() >= 0 and result.focus_map.max() <= n - 1
    assert result.confidence.min() >= 0 and result.confidence.max() <= 1


@pytest.mark.parametrize("method", METHODS)
@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(stack=stacks())
def test_any_valid_stack_gives_a_valid_result(method, stack):
    check_result(stack, method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "stack",
    [
        np.full((4, 32, 32), 7, np.uint8),
        np.stack([np.full((32, 32), k, np.uint8) for k in (1, 2, 3, 4)]),
        np.stack([np.full((20, 36), k, np.float32) for k in (-1e30, 0, 1e30)]),
    ],
    ids=["identical", "each-constant", "huge-constant"],
)
def test_constant_slices_have_zero_confidence(method, stack):
    check_result(stack, method)
    result = fuse(stack, method=method, device="cpu")
    assert (result.confidence == 0).all()


# ---------------------------------------------------------------------------------------------
# Damaged TIFFs


def good_tiffs(folder: Path) -> dict[str, bytes]:
    """Small valid stacks in the layouts microscopes write: ImageJ, plain, tiled zlib, OME."""
    data = (np.random.default_rng(0).random((6, 40, 48)) * 60000).astype(np.uint16)
    layouts = {
        "imagej": {"imagej": True, "metadata": {"axes": "ZYX"}},
        "plain": {"photometric": "minisblack"},
        "zlib": {"photometric": "minisblack", "compression": "zlib", "tile": (16, 16)},
        "ome": {"ome": True, "metadata": {"axes": "ZYX"}},
    }
    blobs = {}
    for name, kwargs in layouts.items():
        path = folder / f"good_{name}.tif"
        tifffile.imwrite(path, data, **kwargs)
        blobs[name] = path.read_bytes()
    return blobs


def broken(blob: bytes) -> dict[str, bytes]:
    """Damage that must make any TIFF unreadable: it leaves no image to find."""
    n = len(blob)
    garbage = np.random.default_rng(1).integers(0, 256, n - 8, dtype=np.uint8).tobytes()
    return {
        "empty": b"",
        "magic-only": blob[:4],
        "header-only": blob[:8],
        "zero-pages": blob[:4] + b"\0\0\0\0" + blob[8:],
        "ifd-past-end": blob[:4] + struct.pack("<I", n + 4096) + blob[8:],
        "ifd-in-header": blob[:4] + struct.pack("<I", 2) + blob[8:],
        "garbage": blob[:8] + garbage,
        "truncated-first-ifd": blob[:12],
    }


def mutated(blob: bytes, seed: int) -> dict[str, bytes]:
    """Truncations and byte flips: the file may still be readable, or must fail cleanly."""
    rng = np.random.default_rng(seed)
    n = len(blob)
    out = {f"cut-{c}": blob[:c] for c in sorted({n // 4, n // 2, n - 300, n - 1, 100, 400})}
    for i in range(12):
        b = bytearray(blob)
        span = 400 if i % 2 else n  # the header and first IFD, or anywhere
        for pos in rng.integers(0, min(span, n), rng.integers(1, 8)):
            b[int(pos)] = int(rng.integers(0, 256))
        out[f"flip-{i}"] = bytes(b)
    return out


def read_all(path: Path) -> np.ndarray:
    return np.asarray(open_image([path]).as_stack().data)


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, bytes]:
    return good_tiffs(tmp_path_factory.mktemp("good"))


@pytest.mark.parametrize("layout", ["imagej", "plain", "zlib", "ome"])
def test_broken_tiffs_are_read_errors(tmp_path, originals, layout):
    for name, blob in broken(originals[layout]).items():
        path = tmp_path / f"{name}.tif"
        path.write_bytes(blob)
        with pytest.raises(ReadError, match=r"is not a readable image") as info:
            read_all(path)
        message = str(info.value)
        assert str(path) in message and "\n" not in message and message.endswith("."), name


@pytest.mark.filterwarnings("ignore::napari_pdmfuse.PdmFuseWarning")
@pytest.mark.parametrize("layout", ["imagej", "plain", "zlib", "ome"])
def test_damaged_tiffs_never_raise_anything_else(tmp_path, originals, layout):
    outcomes = set()
    for name, blob in mutated(originals[layout], seed=len(layout)).items():
        path = tmp_path / f"{name}.tif"
        path.write_bytes(blob)
        try:
            data = read_all(path)
        except PdmFuseError as err:
            assert isinstance(err, (ReadError, InputError)), name
            assert "\n" not in str(err) and str(err).endswith("."), name
            outcomes.add(type(err).__name__)
        else:
            assert data.ndim == 3 and data.shape[0] >= 2, name
            outcomes.add("read")
    assert "ReadError" in outcomes


def cli_outcome(tmp_path: Path, path: Path) -> int:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    before = sorted(p.name for p in out.iterdir())
    code = main([
        "fuse", str(path), "-o", str(out / "fused.tif"), "--confidence", str(out / "c.tif"),
        "--method", "argmax", "--quiet", "--overwrite",
    ])  # fmt: skip
    after = sorted(p.name for p in out.iterdir())
    if code == 0:
        assert after == ["c.tif", "fused.tif"]
    else:
        assert after == before  # nothing written, no temporary file left
    return code


def test_damaged_tiffs_through_the_cli(tmp_path, originals, capsys):
    for layout, blob in originals.items():
        cases = {**broken(blob), **mutated(blob, seed=7)}
        for name, damaged in cases.items():
            path = tmp_path / f"{layout}-{name}.tif"
            path.write_bytes(damaged)
            code = cli_outcome(tmp_path, path)
            err = capsys.readouterr().err
            assert "Traceback" not in err, (layout, name, err)
            errors = [line for line in err.splitlines() if line.startswith("pdmfuse: error: ")]
            other = [line for line in err.splitlines() if not line.startswith("pdmfuse: ")]
            assert not other, (layout, name, err)  # no log noise from the libraries
            if name in broken(blob):
                assert code == 2 and len(errors) == 1 and "not a readable image" in errors[0]
            else:
                assert code in (0, 2) and len(errors) == (code == 2), (layout, name, err)


# ---------------------------------------------------------------------------------------------
# The damaged-input corpus (tests/fuzz_corpus.py): a slice of what benchmarks/fuzz.py runs whole

#: The corpus' seed, and the cases run here: every 50th of the 2000, which meet every input
#: kind and output format.
SEED = 1
SLICE = range(0, 2000, 50)


def tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(folder.rglob("*"))
        if not p.is_symlink()
    }


def test_the_corpus_is_made_from_its_seed_alone(tmp_path):
    for index in (0, 5, 8, 11, 12, 1207):
        first, second = tmp_path / f"{index}a", tmp_path / f"{index}b"
        first.mkdir()
        second.mkdir()
        a = fuzz_corpus.make_case(SEED, index, first)
        b = fuzz_corpus.make_case(SEED, index, second)
        assert (a.original, a.damage, a.output) == (b.original, b.damage, b.output)
        assert tree(first) == tree(second), index


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="the runner waits on its worker with select")
def test_a_slice_of_the_damaged_input_corpus_ends_with_outputs_or_one_sentence():
    runner = fuzz_corpus.Runner(SEED, bound=60)
    try:
        results = [runner.run(index) for index in SLICE]
    finally:
        runner.close()
    assert [r for r in results if r["outcome"] == "finding"] == []
    assert {r["outcome"] for r in results} == {"fused", "refused"}
    assert {r["original"] for r in results} == set(fuzz_corpus.ORIGINALS)
    assert {r["output"] for r in results} == set(fuzz_corpus.OUTPUTS)
