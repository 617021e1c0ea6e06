"""Rerunning a batch resumes it: stacks fused before with the same options are kept untouched,
unfinished ones are fused, ones made with other options are refused in one sentence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_pdmfuse import FuseOptions, Outputs, fuse_files, outputs
from napari_pdmfuse.cli import main
from napari_pdmfuse.errors import OutputError
from napari_pdmfuse.writing.recorded import read_recorded

ARGMAX = ["--method", "argmax", "--focus-map"]


def write_stacks(folder: Path, n: int) -> list[Path]:
    """``n`` small uint16 stacks, each with its own pixels."""
    folder.mkdir()
    paths = []
    for k in range(n):
        data = np.random.default_rng(k).integers(0, 4000, (4, 24, 30), dtype=np.uint16)
        path = folder / f"s{k}.tif"
        tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZYX"})
        paths.append(path)
    return paths


def batch(capsys, inputs, out: Path, *extra: str) -> tuple[int, str]:
    code = main(["batch", *map(str, inputs), "--out-dir", str(out), *extra])
    return code, capsys.readouterr().err


def stamps(folder: Path) -> dict[str, tuple[int, int]]:
    """Each file's inode and modification time: what rewriting it would change."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


@pytest.fixture
def fusions(monkeypatch) -> list[str]:
    """The name of every image fused from now on."""
    names: list[str] = []
    opened = outputs.FileOutputs.__init__

    def counting(self, job, *args, **kwargs):
        names.append(job.image.name)
        opened(self, job, *args, **kwargs)

    monkeypatch.setattr(outputs.FileOutputs, "__init__", counting)
    return names


def test_an_interrupted_batch_resumes_without_redoing_finished_stacks(
    tmp_path, capsys, monkeypatch, fusions
):
    inputs = write_stacks(tmp_path / "in", 4)
    assert batch(capsys, inputs, tmp_path / "whole", *ARGMAX)[0] == 0

    # Ctrl-C in the middle of the third stack.
    write = outputs.FileOutputs.write

    def interrupted(self, part, tile, result):
        if self.job.image.name == "s2":
            raise KeyboardInterrupt
        write(self, part, tile, result)

    monkeypatch.setattr(outputs.FileOutputs, "write", interrupted)
    out = tmp_path / "resumed"
    report = tmp_path / "report.html"
    code, err = batch(capsys, inputs, out, *ARGMAX, "--report", str(report))
    assert code == 130 and "interrupted at" in err
    assert f"Stopped at {inputs[2]}: 2 not fused." in report.read_text()
    assert report.with_suffix(".csv").read_text().count("\n") == 3  # a header, two stacks
    finished = stamps(out)
    assert sorted(finished) == ["s0_focus.tif", "s0_fused.tif", "s1_focus.tif", "s1_fused.tif"]

    monkeypatch.setattr(outputs.FileOutputs, "write", write)
    fusions.clear()
    code, err = batch(capsys, inputs, out, *ARGMAX)
    assert code == 0, err
    assert fusions == ["s2", "s3"]  # the finished stacks were not fused again
    assert {k: v for k, v in stamps(out).items() if k in finished} == finished
    assert "kept " in err and "batch done: 2 fused, 2 kept, 0 failed." in err

    whole = tmp_path / "whole"
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in whole.iterdir())
    for path in out.iterdir():
        np.testing.assert_array_equal(tifffile.imread(path), tifffile.imread(whole / path.name))
        assert read_recorded(path).record == read_recorded(whole / path.name).record


def test_a_stack_with_an_output_missing_is_fused_again(tmp_path, capsys, fusions):
    inputs = write_stacks(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert batch(capsys, inputs, out, *ARGMAX)[0] == 0
    (out / "s1_focus.tif").unlink()
    before = stamps(out)
    fusions.clear()

    code, err = batch(capsys, inputs, out, *ARGMAX, "-q")
    assert (code, err) == (0, "")
    assert fusions == ["s1"]
    after = stamps(out)
    assert after["s0_fused.tif"] == before["s0_fused.tif"]
    assert after["s1_fused.tif"] != before["s1_fused.tif"]  # its set was made again, whole
    assert "s1_focus.tif" in after

    fusions.clear()  # asking for a map more: every stack's set is incomplete
    assert batch(capsys, inputs, out, *ARGMAX, "--confidence", "-q")[0] == 0
    assert fusions == ["s0", "s1"]


def test_outputs_made_with_other_options_are_refused_and_kept(tmp_path, capsys, fusions):
    inputs = write_stacks(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert batch(capsys, inputs, out, *ARGMAX)[0] == 0
    before = stamps(out)
    fusions.clear()

    code, err = batch(capsys, inputs, out, "--method", "wavelet", "--focus-map", "-q")
    assert code == 2 and fusions == []
    assert stamps(out) == before
    lines = err.splitlines()
    assert lines[0] == (
        f"pdmfuse: error: {inputs[0]}: The output {out / 's0_fused.tif'} was made with other "
        "options (method argmax, not wavelet); rerun with the options it records, write to "
        "another folder or replace it (--overwrite)."
    )
    assert "batch done: 0 fused, 2 failed:" in err

    # --overwrite replaces them all.
    assert batch(capsys, inputs, out, "--method", "wavelet", "--overwrite", "-q") == (0, "")
    assert fusions == ["s0", "s1"]


@pytest.mark.parametrize(
    ("name", "dtype", "rgb"),
    [
        ("fused.tif", np.uint16, False),  # ImageJ hyperstack
        ("fused.tif", np.float64, False),  # OME-TIFF: ImageJ cannot open float64
        ("fused.ome.tif", np.uint8, True),
        ("fused.ome.zarr", np.uint8, True),  # samples stored as a channel axis
        ("fused.ome.zarr", np.int16, False),
    ],
)
def test_every_output_format_is_recognised_on_a_rerun(tmp_path, name, dtype, rgb, fusions):
    shape = (4, 24, 30, 3) if rgb else (4, 24, 30)
    data = (np.random.default_rng(0).random(shape) * 100).astype(dtype)
    source = tmp_path / "stack.tif"
    tifffile.imwrite(source, data, photometric="rgb" if rgb else "minisblack")
    targets = Outputs(tmp_path / name, focus_map=tmp_path / "focus.ome.zarr")
    argmax = FuseOptions(method="argmax")
    fuse_files(source, targets, argmax)

    assert fuse_files(source, targets, argmax, resume=True).skipped
    assert fusions == ["stack"]
    with pytest.raises(OutputError, match=r"made with other options \(method argmax, not pyramid"):
        fuse_files(source, targets, FuseOptions(method="pyramid"), resume=True)
    options = FuseOptions(method="argmax", z_spacing=2.0)
    with pytest.raises(OutputError, match=r"other options \(z_spacing_um unset, not 2\.0\)"):
        fuse_files(source, targets, options, resume=True)  # the map in µm, not slices


def test_a_different_stack_under_the_same_name_is_refused(tmp_path, capsys):
    inputs = write_stacks(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert batch(capsys, inputs, out, "--method", "argmax", "-q")[0] == 0
    tifffile.imwrite(
        inputs[0], np.zeros((4, 20, 30), np.uint16), imagej=True, metadata={"axes": "ZYX"}
    )
    code, err = batch(capsys, inputs, out, "--method", "argmax", "-q")
    assert code == 2 and "(size 24×30, not 20×30)" in err
