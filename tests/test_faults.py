"""Faults a user meets far from the happy path: saturated pixels, full or read-only disks, two
runs writing one name, very long names, a lost terminal, signals, damaged files found late.

Each test checks what the user sees: the values written, the exit status and the one-line
message, that nothing is left at the output's name, no temporary file, and the inputs intact.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st

import napari_pdmfuse
from napari_pdmfuse import OutputError, sizes
from napari_pdmfuse.cli import main
from napari_pdmfuse.entry import launch
from napari_pdmfuse.errors import Terminated
from napari_pdmfuse.sizes import gib
from napari_pdmfuse.stack import to_dtype
from napari_pdmfuse.terminal import stop_signals
from napari_pdmfuse.writing import atomic, fsops
from napari_pdmfuse.writing.atomic import atomic_files, check_outputs, output_name, temp_name

INTEGERS = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]
FLOATS = [np.float16, np.float32, np.float64]
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and descriptors")


def stack_file(folder: Path, name: str = "stack.tif") -> Path:
    """3 planes of 64² uint8, enough texture for argmax."""
    data = np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8)
    path = folder / name
    tifffile.imwrite(path, data, photometric="minisblack")
    return path


def temps(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".pdmfuse-tmp-" in p.name]


def run(capsys, *args: object) -> tuple[int, list[str]]:
    """``pdmfuse ARGS`` in this process: exit status and the lines on stderr."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err.strip().splitlines()


def command(*args: object) -> list[str]:
    return [sys.executable, "-m", "napari_pdmfuse", *(str(a) for a in args)]


QUIET_ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


# ---------------------------------------------------------------------------------------------
# Saturated pixels come back exactly, whatever the type


def no_warnings(function, *args, **kwargs):
    """``function(*args, **kwargs)``, failing on any warning (overflow, invalid cast)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return function(*args, **kwargs)


def exact(value: float, dtype: type) -> int:
    """Round half to even, then saturate: what to_dtype must give, in exact integers."""
    info = np.iinfo(dtype)
    if np.isinf(value):
        return int(info.max) if value > 0 else int(info.min)
    return min(max(round(value), int(info.min)), int(info.max))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize("ftype", [np.float32, np.float64])
@pytest.mark.parametrize("dtype", INTEGERS)
def test_to_dtype_rounds_and_saturates_every_integer_type_exactly(dtype, ftype, data):
    info = np.iinfo(dtype)
    width = np.finfo(ftype).bits
    near = [info.max, info.min, info.max + 1, info.min - 1, 2**64, -(2**64), 0.5, -1.5, 2.5]
    extremes = [float(ftype(v)) for v in near] + [np.inf, -np.inf]
    extremes += [float(np.nextafter(ftype(info.max), ftype(0))), float(np.nextafter(ftype(0), 1))]
    value = st.one_of(
        st.sampled_from(extremes),
        st.floats(float(ftype(info.min)), float(ftype(info.max)), width=width),
        st.floats(allow_nan=False, width=width),
    )
    plane = np.array(data.draw(st.lists(value, min_size=1, max_size=16)), dtype=ftype)
    out = no_warnings(to_dtype, plane, np.dtype(dtype))
    assert out.dtype == dtype
    assert out.tolist() == [exact(v, dtype) for v in plane.tolist()]


@settings(max_examples=40, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize("ftype", [np.float32, np.float64])
@pytest.mark.parametrize("dtype", FLOATS)
def test_to_dtype_saturates_narrower_floats_at_their_largest_value(dtype, ftype, data):
    top = float(np.finfo(dtype).max)
    extremes = [top, -top, float(np.finfo(ftype).max), -float(np.finfo(ftype).max), 65519.0]
    value = st.one_of(st.sampled_from(extremes), st.floats(allow_nan=False, width=32))
    plane = np.array(data.draw(st.lists(value, min_size=1, max_size=16)), dtype=ftype)
    out = no_warnings(to_dtype, plane, np.dtype(dtype))
    assert out.dtype == dtype and np.isfinite(out).all()
    with np.errstate(over="ignore"):
        cast = plane.astype(dtype)
    fits = np.isfinite(cast)
    np.testing.assert_array_equal(out[fits], cast[fits])
    np.testing.assert_array_equal(out[~fits], np.sign(plane[~fits]) * np.float64(top))


@pytest.mark.parametrize(
    ("dtype", "end"),
    [(np.uint32, "max"), (np.int32, "max"), (np.int32, "min"), (np.int64, "max"),
     (np.int64, "min"), (np.uint64, "max"), (np.uint16, "max"), (np.float16, "max")],
)  # fmt: skip
def test_a_saturated_stack_fuses_to_its_saturated_value(dtype, end):
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "ui" else np.finfo(dtype)
    value = getattr(info, end)
    stack = np.full((3, 32, 32), value, dtype)
    stack[:, ::2, ::2] = dtype(0) if end == "max" else dtype(-1)  # some texture, too
    fused = no_warnings(napari_pdmfuse.fuse, stack, method="argmax").fused
    assert fused.dtype == dtype
    np.testing.assert_array_equal(fused[1::2, 1::2], value)


# ---------------------------------------------------------------------------------------------
# Two runs writing one name: the loser replaces nothing and leaves nothing


@pytest.fixture(params=["renameat2", "link", "rename"])
def moves(request, monkeypatch):
    """Each way the final move can refuse a taken name: renameat2(RENAME_NOREPLACE), a hard
    link (systems without renameat2) and a checked rename (file systems without links)."""
    if request.param == "renameat2" and fsops._renameat2() is None:
        pytest.skip("no renameat2 here")
    if request.param != "renameat2":
        monkeypatch.setattr(fsops, "_renameat2", lambda: None)
    if request.param == "rename":

        def no_links(*args, **kwargs):
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_links)
    return request.param


@pytest.mark.parametrize("kind", ["file", "store", "empty folder"])
def test_an_output_that_appears_while_writing_is_never_replaced(tmp_path, moves, kind):
    first, target = tmp_path / "focus.tif", tmp_path / ("f.tif" if kind == "file" else "f.ome.zarr")
    with pytest.raises(OutputError) as caught, atomic_files([first, target]) as (temp_first, temp):
        temp_first.write_bytes(b"ours")
        if kind == "file":
            temp.write_bytes(b"ours")
            target.write_bytes(b"theirs")  # another run finished first
        else:
            (temp / "zarr.json").write_text("ours")
            target.mkdir()
            if kind == "store":
                (target / "zarr.json").write_text("theirs")
    assert str(caught.value) == (
        f"The output {target} appeared while this run was writing; nothing was replaced and "
        "nothing was written, so choose another name or run again with --overwrite."
    )
    assert not first.exists() and temps(tmp_path) == []
    if kind == "file":
        assert target.read_bytes() == b"theirs"
    else:
        assert [p.name for p in target.iterdir()] == (
            [] if kind == "empty folder" else ["zarr.json"]
        )


def test_overwriting_replaces_every_output_or_none(tmp_path, monkeypatch):
    fused, store = tmp_path / "f.tif", tmp_path / "m.ome.zarr"
    fused.write_bytes(b"old image")
    store.mkdir()
    (store / "zarr.json").write_text("old map")
    real = atomic.rename_noreplace
    new: list[Path] = []

    def refused_second(source, target):
        if target == store and source in new:
            raise OSError(errno.EACCES, "Permission denied", str(target))
        real(source, target)

    monkeypatch.setattr(atomic, "rename_noreplace", refused_second)
    refused = r"^Writing to .* failed \(Permission denied\); check"
    with (
        pytest.raises(OutputError, match=refused),
        atomic_files([fused, store], overwrite=True) as (temp, temp_store),
    ):
        new += [temp, temp_store]
        temp.write_bytes(b"new image")
        (temp_store / "zarr.json").write_text("new map")
    assert fused.read_bytes() == b"old image"
    assert (store / "zarr.json").read_text() == "old map"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.tif", "m.ome.zarr"]

    monkeypatch.setattr(atomic, "rename_noreplace", real)
    with atomic_files([fused, store], overwrite=True) as (temp, temp_store):
        temp.write_bytes(b"new image")
        (temp_store / "zarr.json").write_text("new map")
    assert fused.read_bytes() == b"new image"
    assert [p.name for p in store.iterdir()] == ["zarr.json"]
    assert (store / "zarr.json").read_text() == "new map"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.tif", "m.ome.zarr"]


def test_ctrl_c_while_moving_outputs_in_restores_the_old_ones(tmp_path, monkeypatch):
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    a.write_bytes(b"old a")
    b.write_bytes(b"old b")
    real = atomic.rename_noreplace
    new: list[Path] = []

    def interrupted(source, target):
        if target == b and source in new:
            raise KeyboardInterrupt
        real(source, target)

    monkeypatch.setattr(atomic, "rename_noreplace", interrupted)
    with pytest.raises(KeyboardInterrupt), atomic_files([a, b], overwrite=True) as temps_:
        new += temps_
        for temp in temps_:
            temp.write_bytes(b"new")
    assert (a.read_bytes(), b.read_bytes()) == (b"old a", b"old b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.tif"]


# ---------------------------------------------------------------------------------------------
# Disk full, read-only, no permission: one sentence, nothing left


@contextmanager
def tmpfs(folder: Path, size: str):
    """A tiny RAM file system at ``folder``, or a skip where mounting is not allowed."""
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.parametrize("fused", ["fused.tif", "fused.ome.tif", "fused.ome.zarr"])
def test_a_disk_filling_up_mid_run_is_one_error_and_leaves_nothing(tmp_path, capsys, monkeypatch,
                                                                   fused):  # fmt: skip
    source = np.random.default_rng(1).integers(0, 255, (3, 256, 256), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "s.tif", source, photometric="minisblack")
    before = (tmp_path / "s.tif").read_bytes()
    monkeypatch.setattr("napari_pdmfuse.sizes.free_disk", lambda folder: None)  # no check ahead
    with tmpfs(tmp_path / "small", "128k") as disk:
        code, err = run(capsys, "fuse", tmp_path / "s.tif", "-o", disk / fused, "--focus-map",
                        disk / "focus.tif", "--method", "argmax", "-q")  # fmt: skip
        left = sorted(p.name for p in disk.iterdir())
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("pdmfuse: error: ") and f"Writing to {disk} failed" in err[0]
    assert "(No space left on device); free some space" in err[0]
    assert left == []
    assert (tmp_path / "s.tif").read_bytes() == before


def test_a_short_write_is_retried_not_left_as_a_hole(tmp_path, capsys, monkeypatch):
    """os.pwrite on a filling disk writes what fits and returns the count; the rest must be
    written or fail, never left as zeros."""
    real = os.pwrite

    def half(fd, data, position):
        data = memoryview(data).cast("B")
        return real(fd, data[: max(1, len(data) // 2)], position)

    monkeypatch.setattr(os, "pwrite", half)
    code, _ = run(capsys, "fuse", stack_file(tmp_path), "-o", tmp_path / "f.tif", "--focus-map",
                  tmp_path / "m.tif", "--method", "argmax", "-q")  # fmt: skip
    monkeypatch.setattr(os, "pwrite", real)
    expected = napari_pdmfuse.fuse(tifffile.imread(tmp_path / "stack.tif"), method="argmax")
    assert code == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "f.tif"), expected.fused)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "m.tif"), expected.focus_map)


def test_a_tiny_output_on_a_full_disk_gives_sizes_in_sensible_units(tmp_path, capsys):
    stack = stack_file(tmp_path)
    with tmpfs(tmp_path / "small", "1m") as disk:
        code, err = run(capsys, "fuse", stack, "-o", disk / "f.tif", "--method", "argmax")
        left = list(disk.iterdir())
    assert code == 2 and len(err) == 1 and left == []
    assert f"need 16.0 MiB but only 1.0 MiB is free in {disk}" in err[0]
    assert [gib(n) for n in (0, 300, 3 * 2**10, 5 * 2**20, 1.5 * 2**30)] == [
        "0 bytes", "300 bytes", "3.0 KiB", "5.0 MiB", "1.5 GiB"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("code", "reason", "advice"),
    [(errno.EROFS, "Read-only file system", "choose a folder on a writable disk"),
     (errno.EACCES, "Permission denied", "check the folder's permissions"),
     (errno.EDQUOT, "Disk quota exceeded", "free some of your quota"),
     (errno.ENOSPC, "No space left on device", "free some space")],
)  # fmt: skip
def test_a_failed_move_is_one_sentence_naming_folder_and_reason(tmp_path, capsys, monkeypatch,
                                                                code, reason, advice):  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    stack = stack_file(tmp_path)

    def refused(source, target):
        raise OSError(code, reason, str(target))

    monkeypatch.setattr(atomic, "rename_noreplace", refused)
    status, err = run(capsys, "fuse", stack, "-o", out / "f.tif", "--method", "argmax", "-q")
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith("pdmfuse: error: ")
    assert f"Writing to {out} failed ({reason}); {advice}" in err[0]
    assert err[0].endswith(", nothing was written or replaced.")
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Long names: legal on the file system, so they must work; too long ones are refused up front


def test_outputs_named_up_to_the_file_systems_limit_are_written(tmp_path, capsys):
    fused = tmp_path / ("f" * (255 - len(".ome.tif")) + ".ome.tif")
    focus = tmp_path / ("m" * 251 + ".tif")
    code, err = run(capsys, "fuse", stack_file(tmp_path), "-o", fused, "--focus-map", focus,
                    "--method", "argmax", "-q")  # fmt: skip
    assert code == 0, err
    assert tifffile.TiffFile(fused).is_ome and tifffile.imread(focus).dtype == np.float32
    assert temps(tmp_path) == []


def test_temporary_names_of_long_outputs_stay_short_and_keep_their_suffix(tmp_path, monkeypatch):
    target = tmp_path / ("x" * 240 + ".OME.Zarr")
    temp = temp_name(target)
    assert len(os.fsencode(temp.name)) <= 255 and temp.parent == tmp_path
    assert atomic.TEMP_PATTERN.match(temp.name)["host"] == atomic.HOST
    assert output_name(temp).endswith(".OME.Zarr") and output_name(temp) != target.name
    assert output_name(temp_name(tmp_path / "f.tif")) == "f.tif"  # short names kept as they are
    stale = temp_name(tmp_path / ("y" * 250 + ".tif"))
    stale.write_bytes(b"left by a killed run")
    os.utime(stale, (atomic.STARTED - 60, atomic.STARTED - 60))
    monkeypatch.setattr(atomic, "pid_alive", lambda pid: False)
    monkeypatch.setattr(os, "getpid", lambda: 999_999_999)  # as if written by another process
    assert atomic.clean_stale_temps(tmp_path) == [stale]


def test_a_name_longer_than_the_file_system_allows_is_refused_before_work(tmp_path):
    target = tmp_path / ("f" * 256 + ".tif")
    with pytest.raises(OutputError, match=r"longer than the 255 bytes .* choose a shorter name"):
        check_outputs([target])


# ---------------------------------------------------------------------------------------------
# Any name Linux allows (any byte but "/" and NUL) fuses, and is recorded and shown escaped

#: File names, as bytes, of each kind that once broke a metadata encoder or a message.
NAMES = {
    "undecodable": (b"st\xffack\xfe", "st\\xffack\\xfe"),
    "newline": (b"two\nlines", "two\\nlines"),
    "terminal escape": (b"red\x1b[31m\tx", "red\\x1b[31m\\tx"),
    "near NAME_MAX": (b"n\xc3\xa9" * 80, "n\u00e9" * 80),  # 244 bytes with .tif, UTF-8 kept
}


def recorded_name(path: Path) -> str:
    """The image name an output records: OME-Zarr's multiscale, OME-XML's, or ImageJ's."""
    if path.name.endswith(".ome.zarr"):
        import zarr

        return zarr.open_group(str(path), mode="r").attrs["ome"]["multiscales"][0]["name"]
    with tifffile.TiffFile(path) as tif:
        if tif.is_imagej:
            return tif.imagej_metadata["Properties"]["Name"]
        return tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Name"]


@pytest.mark.parametrize("suffix", [".tif", ".ome.tif", ".ome.zarr"])
@pytest.mark.parametrize("kind", list(NAMES))
def test_any_file_name_fuses_and_is_recorded_and_shown_escaped(tmp_path, capsys, kind, suffix):
    raw, shown = NAMES[kind]
    source = stack_file(tmp_path, os.fsdecode(raw + b".tif"))
    target = tmp_path / os.fsdecode(raw + b"_fused" + suffix.encode())
    code, err = run(capsys, "fuse", source, "-o", target, "--method", "argmax")
    assert code == 0, err
    assert recorded_name(target) == shown
    assert err[-1].startswith("pdmfuse: fused 3 planes")
    assert err[-1].endswith(f"→ {tmp_path}/{shown}_fused{suffix}")
    assert not any("\x1b" in line for line in err)
    assert temps(tmp_path) == []


@pytest.mark.parametrize("kind", ["undecodable", "newline", "terminal escape"])
def test_messages_and_batch_summaries_show_names_escaped_on_one_line(tmp_path, capsys, kind):
    raw, shown = NAMES[kind]
    good = stack_file(tmp_path, os.fsdecode(raw + b".tif"))
    flat = tmp_path / os.fsdecode(raw + b"-one.tif")
    tifffile.imwrite(flat, np.zeros((24, 28), np.uint8))
    code, err = run(capsys, "fuse", flat, "-o", tmp_path / "f.tif")
    assert code == 2 and err == [
        f"pdmfuse: error: {tmp_path}/{shown}-one.tif holds a single 2-D image, not a stack; give "
        "the file with all focal planes, or several plane files."
    ]
    code, err = run(capsys, "batch", good, flat, "--out-dir", tmp_path / "out", "-q",
                    "--method", "argmax", "--focus-map")  # fmt: skip
    assert code == 2 and err[-2:] == [
        "pdmfuse: batch done: 1 fused, 1 failed:",
        f"pdmfuse:   - {tmp_path}/{shown}-one.tif holds a single 2-D image, not a stack; give "
        "the file with all focal planes, or several plane files.",
    ]
    written = sorted(os.listdir(os.fsencode(tmp_path / "out")))
    assert written == [raw + b"_focus.tif", raw + b"_fused.tif"]


# ---------------------------------------------------------------------------------------------
# Short of memory: a limit of the process's own (ulimit -v, a cgroup's) shrinks the tiles, or the
# run is refused up front; it is never killed halfway


def cgroups(root: Path, membership: str, groups: dict[str, tuple[str, int, int]]) -> Path:
    """A fake /proc and /sys under ``root``: this process in ``membership`` (/proc/self/cgroup),
    and memory accounts (limit, use, inactive page cache) by cgroup folder."""
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(membership)
    for folder, (limit, used, cache) in groups.items():
        group = root / folder
        group.mkdir(parents=True, exist_ok=True)
        v2 = folder.startswith("sys/fs/cgroup/memory") is False
        names = ("memory.max", "memory.current") if v2 else (
            "memory.limit_in_bytes", "memory.usage_in_bytes")  # fmt: skip
        (group / names[0]).write_text(f"{limit}\n")
        (group / names[1]).write_text(f"{used}\n")
        key = "inactive_file" if v2 else "total_inactive_file"
        (group / "memory.stat").write_text(f"active_file 5\n{key} {cache}\nfile 9\n")
    return root


MiB = 2**20


def test_cgroup_memory_limits_are_read_through_the_parents(tmp_path):
    v2 = cgroups(tmp_path / "v2", "0::/batch.slice/job42\n", {
        "sys/fs/cgroup/batch.slice": (str(4096 * MiB), 3000 * MiB, 0),  # 1096 MiB left
        "sys/fs/cgroup/batch.slice/job42": (str(1024 * MiB), 700 * MiB, 200 * MiB),  # 524 left
    })  # fmt: skip
    assert sizes._cgroup_memory_left(v2) == 524 * MiB  # inactive page cache is given back
    v1 = cgroups(tmp_path / "v1", "12:pids:/x\n4:cpu,memory:/docker/abc\n0::/\n", {
        "sys/fs/cgroup/memory/docker/abc": ("9223372036854771712", 10 * MiB, 0),  # no limit
        "sys/fs/cgroup/memory/docker": (str(2048 * MiB), 1500 * MiB, 100 * MiB),
        "sys/fs/cgroup/memory": ("9223372036854771712", 8000 * MiB, 0),
    })  # fmt: skip
    assert sizes._cgroup_memory_left(v1) == 648 * MiB
    unlimited = cgroups(tmp_path / "none", "0::/user.slice\n", {
        "sys/fs/cgroup/user.slice": ("max", 900 * MiB, 0),
    })  # fmt: skip
    assert sizes._cgroup_memory_left(unlimited) is None
    # In a cgroup namespace the process's own cgroup is the mount's root.
    namespaced = cgroups(tmp_path / "ns", "0::/\n", {"sys/fs/cgroup": (str(512 * MiB), 0, 0)})
    assert sizes._cgroup_memory_left(namespaced) == 512 * MiB
    assert sizes._cgroup_memory_left(tmp_path / "no-such-system") is None


def test_under_a_memory_limit_tiles_shrink_below_the_usual_floor(monkeypatch):
    import psutil

    from napari_pdmfuse.methods.argmax import ArgmaxMethod
    from napari_pdmfuse.planning import tile_budget

    class Plenty:
        available = 64 * 2**30

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Plenty)
    monkeypatch.setattr(sizes, "limit_left", lambda: 300 * MiB)
    # What the method keeps besides its tiles (160 MiB), then two tiles' working sets.
    assert tile_budget(ArgmaxMethod()) == 70 * MiB
    assert sizes.available_memory() == 300 * MiB
    monkeypatch.setattr(sizes, "limit_left", lambda: None)
    assert tile_budget(ArgmaxMethod()) == 640 * MiB


def address_space(limit: int):
    """A child's address space limited to ``limit`` bytes, as ``ulimit -v`` does."""
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.mark.slow
@posix_only
def test_under_a_1_gib_address_space_limit_a_stack_fuses_or_is_refused_up_front(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (6, 1200, 1200), dtype=np.uint8)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, data, photometric="minisblack")
    limited = {"preexec_fn": address_space(2**30), "env": QUIET_ENV, "timeout": 600}
    free = subprocess.run(
        command("fuse", stack, "-o", tmp_path / "free.tif", "--method", "argmax", "-q"),
        capture_output=True,
        env=QUIET_ENV,
        timeout=600,
    )
    assert free.returncode == 0, free.stderr
    tight = subprocess.run(command("fuse", stack, "-o", tmp_path / "tight.tif", "--method",
                                   "argmax", "-q"), capture_output=True, **limited)  # fmt: skip
    assert tight.returncode == 0, tight.stderr
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "tight.tif"),
                                  tifffile.imread(tmp_path / "free.tif"))  # fmt: skip
    refused = subprocess.run(command("fuse", stack, "-o", tmp_path / "net.tif", "-q"),
                             capture_output=True, text=True, **limited)  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.startswith(
        f"pdmfuse: error: {stack}: Fusing this 6-plane stack with the pdmnet method needs about "
    )
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["free.tif", "stack.tif", "tight.tif"]


# ---------------------------------------------------------------------------------------------
# The terminal: closed or broken stderr, hang-ups, Ctrl-C at start-up


@posix_only
def test_a_run_with_stderr_closed_still_writes_its_outputs(tmp_path):
    stack = stack_file(tmp_path)
    done = subprocess.run(
        command("fuse", stack, "-o", tmp_path / "f.tif", "--method", "argmax"),
        stdout=subprocess.PIPE,
        preexec_fn=lambda: os.close(2),  # pdmfuse ... 2>&-
        env=QUIET_ENV,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and done.stdout == b""
    expected = napari_pdmfuse.fuse(tifffile.imread(stack), method="argmax").fused
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "f.tif"), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.tif", "stack.tif"]


@posix_only
def test_a_run_whose_stderr_reader_quit_still_writes_its_outputs(tmp_path):
    read, write = os.pipe()
    os.close(read)  # pdmfuse ... 2>&1 | head -0
    try:
        done = subprocess.run(
            command("fuse", stack_file(tmp_path), "-o", tmp_path / "f.tif", "--method", "argmax"),
            stdout=subprocess.DEVNULL,
            stderr=write,
            env=QUIET_ENV,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write)
    assert done.returncode == 0
    assert tifffile.imread(tmp_path / "f.tif").shape == (64, 64)


@posix_only
def test_a_hang_up_mid_run_ends_like_sigterm_and_leaves_nothing(tmp_path):
    data = np.random.default_rng(5).integers(0, 255, (40, 512, 512), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "slow.tif", data, photometric="minisblack")
    out = tmp_path / "out"
    out.mkdir()
    args = ["fuse", tmp_path / "slow.tif", "-o", out / "f.tif", "--method", "pyramid", "-q"]
    proc = subprocess.Popen(
        command(*args, "--tile", "160"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=QUIET_ENV,
    )
    deadline = time.monotonic() + 60
    while not temps(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # streaming into its temporary file
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=60)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 143, lines
    assert lines == ["pdmfuse: terminated; nothing was written."]
    assert list(out.iterdir()) == []


@posix_only
def test_a_run_started_with_hang_ups_ignored_keeps_ignoring_them():
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # nohup pdmfuse ...
    try:
        with stop_signals(Terminated):
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, previous)


@posix_only
def test_a_second_stop_signal_does_not_cut_the_clean_up_short():
    before = signal.getsignal(signal.SIGTERM)
    with stop_signals(Terminated):
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGHUP)  # while the first is handled: ignored
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
    assert signal.getsignal(signal.SIGTERM) is before


def test_ctrl_c_while_starting_up_is_one_line_without_traceback(capsys, monkeypatch):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr("napari_pdmfuse.cli.build_parser", interrupted)
    assert run(capsys, "fuse", "x.tif", "-o", "f.tif") == (
        130,
        ["pdmfuse: interrupted; nothing was written."],
    )


def test_ctrl_c_while_the_command_loads_is_one_line_without_traceback(capsys, monkeypatch):
    def interrupted(argv=None, started=None):
        raise KeyboardInterrupt  # as if pressed while importing the command's modules

    monkeypatch.setattr("napari_pdmfuse.cli.main", interrupted)
    monkeypatch.setattr("napari_pdmfuse.entry.keep_freed_memory", lambda: None)  # the tests' heap
    with pytest.raises(SystemExit) as stopped:
        launch()
    assert stopped.value.code == 130
    assert capsys.readouterr().err == "pdmfuse: interrupted; nothing was written.\n"


# ---------------------------------------------------------------------------------------------
# Damaged files found late: one line, not hundreds


def test_damaged_zarr_chunks_give_one_line_not_hundreds(tmp_path):
    import zarr

    data = np.random.default_rng(0).integers(0, 255, (3, 512, 512), dtype=np.uint8)
    root = tmp_path / "stack.ome.zarr"
    group = zarr.open_group(str(root), mode="w", zarr_format=3)
    group.create_array("0", shape=data.shape, chunks=(1, 32, 32), dtype=data.dtype)[...] = data
    axes = [{"name": a, "type": "space"} for a in "zyx"]
    scale = [{"type": "scale", "scale": [1.0, 1.0, 1.0]}]
    datasets = [{"path": "0", "coordinateTransformations": scale}]
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": datasets}]}
    for chunk in (root / "0" / "c" / "2").rglob("*"):
        if chunk.is_file():
            chunk.write_bytes(b"\xff" * 8)  # the last plane damaged: found only while fusing
    done = subprocess.run(
        command("fuse", root, "-o", tmp_path / "f.tif", "--method", "argmax", "-q"),
        capture_output=True,
        env=QUIET_ENV,
        timeout=120,
        check=False,
    )
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 2
    assert lines == [
        f"pdmfuse: error: {root} is not a readable image (damaged, truncated or not an image "
        "file); check the file or export it again."
    ]
    assert not (tmp_path / "f.tif").exists() and temps(tmp_path) == []


def test_an_input_truncated_under_a_run_is_one_sentence_not_a_bus_error(tmp_path):
    """Pixels are read with positioned reads, not a memory map: a file that shrinks after it was
    opened (before, a SIGBUS killed the process with no message) gives a ReadError."""
    import os

    from napari_pdmfuse import ReadError, fuse
    from napari_pdmfuse.reading import open_image

    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.full((4, 256, 256), 7, np.uint16), photometric="minisblack")
    image = open_image([path])
    os.truncate(path, os.path.getsize(path) // 2)
    with pytest.raises(ReadError, match=r"stack\.tif ended before its pixels did") as info:
        fuse(image.data, method="argmax")
    assert str(info.value).count(". ") == 0 and "\n" not in str(info.value)
