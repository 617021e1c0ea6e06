"""``pdmfuse watch``: stacks fused as a slow writer finishes them, never half-written; a restart
redoes nothing; Ctrl-C stops cleanly."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_pdmfuse import FuseOptions, fuse_files, outputs
from napari_pdmfuse.cli import main

#: Short intervals, so the tests take seconds: a stack counts as complete after 0.6 s unchanged.
TIMING = ["--stable", "0.6", "--interval", "0.05", "--idle-exit", "1.5"]


def stack(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, (4, 40, 48), dtype=np.uint16)


def tiff_bytes(data: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, data, imagej=True, metadata={"axes": "ZYX"})
    return buffer.getvalue()


def slow_writer(folder: Path) -> threading.Thread:
    """Writes, as an acquisition does: a.tif in 8 pieces 0.1 s apart; the planes of c/ one
    every 0.1 s; d.tif half, then a pause longer than --stable, then the rest."""

    def write() -> None:
        blob = tiff_bytes(stack(1))
        with (folder / "a.tif").open("wb") as handle:
            for k in range(8):
                handle.write(blob[k * len(blob) // 8 : (k + 1) * len(blob) // 8])
                handle.flush()
                time.sleep(0.1)
        (folder / "c").mkdir()
        for z, plane in enumerate(stack(2).astype(np.uint8)):
            iio.imwrite(folder / "c" / f"z{z}.png", plane)
            time.sleep(0.1)
        blob = tiff_bytes(stack(3))
        with (folder / "d.tif").open("wb") as handle:
            handle.write(blob[: len(blob) // 2])
            handle.flush()
            time.sleep(1.5)  # the writer stalls: d.tif is stable, but cut short
            handle.write(blob[len(blob) // 2 :])

    return threading.Thread(target=write, daemon=True)


def fused_alone(tmp_path: Path, name: str, data: np.ndarray) -> np.ndarray:
    path = tmp_path / f"{name}_whole.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZYX"})
    fuse_files(path, tmp_path / f"{name}_whole_fused.tif", FuseOptions(method="argmax"))
    return tifffile.imread(tmp_path / f"{name}_whole_fused.tif")


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


def watch(capsys, folder: Path, out: Path, *extra: str) -> tuple[int, str]:
    args = ["watch", folder, "--out-dir", out, "--method", "argmax", "--planes", "4", *TIMING]
    code = main([str(a) for a in [*args, *extra]])
    return code, capsys.readouterr().err


def test_stacks_are_fused_once_complete_and_a_restart_redoes_nothing(tmp_path, capsys, fusions):
    folder, out = tmp_path / "acquisition", tmp_path / "fused"
    folder.mkdir()
    writer = slow_writer(folder)
    writer.start()
    code, err = watch(capsys, folder, out)
    writer.join()

    assert code == 0, err
    assert sorted(fusions) == ["a", "c", "d"]  # each once, whole: never a partial one
    assert sorted(p.name for p in out.iterdir()) == ["a_fused.tif", "c_fused.tif", "d_fused.tif"]
    for name, data in (("a", stack(1)), ("d", stack(3))):
        expected = fused_alone(tmp_path, name, data)
        np.testing.assert_array_equal(tifffile.imread(out / f"{name}_fused.tif"), expected)
    planes = stack(2).astype(np.uint8)
    np.testing.assert_array_equal(
        tifffile.imread(out / "c_fused.tif"), fused_alone(tmp_path, "c", planes)
    )
    assert "watch done: 3 fused, 0 failed." in err

    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    fusions.clear()
    code, err = watch(capsys, folder, out)
    assert (code, fusions) == (0, [])
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert "watch done: 0 fused, 3 kept, 0 failed." in err


def test_a_stack_cut_short_waits_until_it_is_complete(tmp_path, capsys, fusions):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    blob = tiff_bytes(stack(1))
    (folder / "a.tif").write_bytes(blob[: len(blob) // 2])  # the writer died, or stalls

    code, err = watch(capsys, folder, out)
    assert code == 2 and fusions == []
    reason = f"{folder / 'a.tif'} is not a readable image"
    assert f"pdmfuse: waiting for {folder / 'a.tif'} to change: {reason}" in err
    assert f"watch done: 0 fused, 1 failed:\npdmfuse:   - {reason}" in err
    assert sorted(os.listdir(out)) == []

    (folder / "a.tif").write_bytes(blob)  # finished at last
    assert watch(capsys, folder, out)[0] == 0
    assert fusions == ["a"]


def test_a_stack_that_changes_after_fusion_is_fused_again(tmp_path, capsys, fusions):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    (folder / "a.tif").write_bytes(tiff_bytes(stack(1)))
    assert watch(capsys, folder, out)[0] == 0
    (folder / "a.tif").write_bytes(tiff_bytes(stack(4)))  # acquired again
    assert watch(capsys, folder, out)[0] == 0
    assert fusions == ["a", "a"]
    np.testing.assert_array_equal(
        tifffile.imread(out / "a_fused.tif"), fused_alone(tmp_path, "a", stack(4))
    )


def test_ctrl_c_mid_fusion_leaves_nothing_and_the_next_start_fuses_it(
    tmp_path, capsys, monkeypatch, fusions
):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for name, seed in (("a", 1), ("b", 2)):
        (folder / f"{name}.tif").write_bytes(tiff_bytes(stack(seed)))
    write = outputs.FileOutputs.write

    def interrupted(self, part, tile, result):
        if self.job.image.name == "b":
            raise KeyboardInterrupt
        write(self, part, tile, result)

    monkeypatch.setattr(outputs.FileOutputs, "write", interrupted)
    code, err = watch(capsys, folder, out)
    assert code == 0 and "Traceback" not in err
    assert f"stopped while fusing {folder / 'b.tif'}; the next start completes it." in err
    assert sorted(os.listdir(out)) == ["a_fused.tif"]  # no temporary file left either

    monkeypatch.setattr(outputs.FileOutputs, "write", write)
    fusions.clear()
    assert watch(capsys, folder, out)[0] == 0
    assert fusions == ["b"]


def test_watch_refuses_its_own_folder_as_output(tmp_path, capsys):
    code, err = watch(capsys, tmp_path, tmp_path)
    assert code == 2 and "is the watched folder" in err


@pytest.mark.slow
def test_sigint_ends_a_watch_cleanly(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.tif").write_bytes(tiff_bytes(stack(1)))
    command = [sys.executable, "-m", "napari_pdmfuse", "watch", str(folder)]
    command += ["--out-dir", str(tmp_path / "out"), "--method", "argmax", "--stable", "0.3"]
    command += ["--interval", "0.05"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "out" / "a_fused.tif").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2)  # watching again, idle
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "Traceback" not in err and "watch done: 1 fused, 0 failed." in err, err
