"""A reproducible corpus of damaged inputs, and a runner that bounds each run's time.

Case ``i`` of seed ``s`` is made from nothing but ``(s, i)``: one of a few small valid inputs
(TIFF layouts, OME-Zarr 0.4 and 0.5 images, zarr arrays, folders of planes), damaged by one
seeded mutation (bytes flipped, files cut short, IFD entries, IFD offsets, strip and tile sizes,
OME-XML and ImageJ descriptions, zarr metadata and chunks, planes of a folder), then fused by
``pdmfuse fuse`` (in a worker process, many cases each). Every run must end, within the time
bound, either with its outputs (exit 0) or with one sentence (exit 2) and nothing written:
anything else (a traceback, another exit status, a second line, leftovers, a hang, the worker
dying) is a finding. ``tests/test_fuzz.py`` runs a slice of it, ``benchmarks/fuzz.py`` all of it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Inputs the mutations start from, taken in turn by case number.
ORIGINALS = ("imagej", "plain", "tiled", "ome", "bigtiff", "strips", "rgb", "shaped",
             "ngff-0.5", "ngff-0.4", "zarr-array", "png-planes", "tif-planes")  # fmt: skip

#: Output names, taken in turn, so every writer meets what the readers let through.
OUTPUTS = ("fused.tif", "fused.ome.tif", "fused.ome.zarr")

#: Ends of a sentence inside a message that are not its end (abbreviations).
ABBREVIATIONS = re.compile(r"\b(e\.g|i\.e)\. ")


def stack(rng: np.random.Generator, dtype: str = "uint16", rgb: bool = False) -> np.ndarray:
    """A small textured stack: 5 planes of 40 × 48 (× 3 for RGB)."""
    shape = (5, 40, 48, 3) if rgb else (5, 40, 48)
    info = np.iinfo(dtype)
    return rng.integers(0, info.max, shape, endpoint=True).astype(dtype)


# ---------------------------------------------------------------------------------------------
# Valid inputs


def write_original(kind: str, folder: Path, rng: np.random.Generator) -> Path:
    """The valid input ``kind`` in ``folder``; returns the path to fuse."""
    import tifffile

    path = folder / ("stack.ome.zarr" if kind.startswith("ngff") else "stack.zarr")
    if kind in ("imagej", "plain", "tiled", "ome", "bigtiff", "strips", "rgb", "shaped"):
        path = folder / ("stack.ome.tif" if kind == "ome" else "stack.tif")
        options: dict[str, object] = {
            "imagej": {"imagej": True, "metadata": {"axes": "ZYX", "spacing": 0.5, "unit": "um"}},
            "plain": {"photometric": "minisblack"},
            "tiled": {"photometric": "minisblack", "compression": "zlib", "tile": (16, 16)},
            "ome": {"metadata": {"axes": "ZYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2}},
            "bigtiff": {"photometric": "minisblack", "bigtiff": True},
            "strips": {"photometric": "minisblack", "compression": "lzw", "rowsperstrip": 7},
            "rgb": {"photometric": "rgb"},
            "shaped": {},  # tifffile's plain save: 3 planes as one page of 3 samples
        }[kind]
        data = stack(rng, "uint8", rgb=kind == "rgb")
        if kind == "shaped":
            data = data[:3]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            tifffile.imwrite(path, data, **options)
        return path
    if kind in ("ngff-0.5", "ngff-0.4", "zarr-array"):
        import zarr

        version = kind.split("-")[1]
        zarr_format = 2 if version in ("0.4", "array") else 3
        data = stack(rng)
        if kind == "zarr-array":
            zarr.create_array(str(path), data=data, chunks=(2, 16, 16), zarr_format=2)
            return path
        group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
        group.create_array("0", data=data, chunks=(1, 16, 16))
        axes = [{"name": "z", "type": "space", "unit": "micrometer"},
                {"name": "y", "type": "space", "unit": "micrometer"},
                {"name": "x", "type": "space", "unit": "micrometer"}]  # fmt: skip
        scale = [{"type": "scale", "scale": [0.5, 0.2, 0.2]}]
        image = {"axes": axes, "datasets": [{"path": "0", "coordinateTransformations": scale}]}
        if version == "0.4":
            group.attrs.update({"multiscales": [{"version": "0.4", **image}]})
        else:
            group.attrs.update({"ome": {"version": "0.5", "multiscales": [image]}})
        return path
    import imageio.v3 as iio

    planes = folder / "planes"
    planes.mkdir()
    data = stack(rng, "uint8" if kind == "png-planes" else "uint16")
    for k, plane in enumerate(data):
        if kind == "png-planes":
            iio.imwrite(planes / f"z{k + 1}.png", plane)
        else:
            tifffile.imwrite(planes / f"z{k + 1}.tif", plane)
    return planes


# ---------------------------------------------------------------------------------------------
# Mutations: each damages the input at ``path`` in place, seeded by ``rng``, and says how


def flip_bytes(path: Path, rng: np.random.Generator) -> str:
    blob = bytearray(path.read_bytes())
    head = bool(rng.integers(2))
    span = min(len(blob), 1024) if head else len(blob)
    count = int(rng.integers(1, 9))
    for pos in rng.integers(0, max(span, 1), count):
        blob[int(pos)] = int(rng.integers(0, 256))
    path.write_bytes(bytes(blob))
    return f"{count} bytes flipped in the {'first 1 KiB' if head else 'file'}"


def cut_short(path: Path, rng: np.random.Generator) -> str:
    size = path.stat().st_size
    keep = int(rng.integers(0, max(size, 1)))
    os.truncate(path, keep)
    return f"cut to {keep} of {size} bytes"


#: TIFF field types and their sizes; the tags worth damaging most.
TIFF_TYPES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8}
KEY_TAGS = (256, 257, 258, 259, 262, 270, 273, 277, 278, 279, 284, 322, 323, 324, 325, 338, 339)


def ifd_entries(blob: bytes) -> tuple[str, list[int], list[int]]:
    """Byte order, offsets of every IFD entry, and the offsets of the next-IFD pointers, of a
    classic little- or big-endian TIFF (nothing for BigTIFF or a broken header)."""
    order = {b"II": "<", b"MM": ">"}.get(blob[:2])
    if order is None or len(blob) < 8 or struct.unpack(order + "H", blob[2:4])[0] != 42:
        return "<", [], []
    entries, pointers, seen = [], [4], set()
    offset = struct.unpack(order + "I", blob[4:8])[0]
    while 8 <= offset < len(blob) - 2 and offset not in seen and len(seen) < 64:
        seen.add(offset)
        (count,) = struct.unpack(order + "H", blob[offset : offset + 2])
        end = offset + 2 + 12 * count
        if end + 4 > len(blob):
            break
        entries += [offset + 2 + 12 * k for k in range(count)]
        pointers.append(end)
        (offset,) = struct.unpack(order + "I", blob[end : end + 4])
    return order, entries, pointers


def damage_ifd_entry(path: Path, rng: np.random.Generator) -> str:
    blob = bytearray(path.read_bytes())
    order, entries, _ = ifd_entries(bytes(blob))
    if not entries:
        return flip_bytes(path, rng)
    keyed = [e for e in entries if struct.unpack(order + "H", blob[e : e + 2])[0] in KEY_TAGS]
    entry = int(rng.choice(keyed if keyed and rng.integers(4) else entries))
    tag = struct.unpack(order + "H", blob[entry : entry + 2])[0]
    field = ["tag", "type", "count", "value"][int(rng.integers(4))]
    size = len(blob)
    choices = {
        "tag": [int(rng.choice(KEY_TAGS)), int(rng.integers(0, 65536))],
        "type": [0, 13, int(rng.integers(0, 65536)), int(rng.choice(list(TIFF_TYPES)))],
        "count": [0, 1, 2**31, 2**32 - 1, int(rng.integers(0, 1000)), size],
        "value": [0, 1, 2**31 - 1, 2**32 - 1, size, size + 4096, entry, int(rng.integers(0, size))],
    }[field]
    new = int(rng.choice(choices))
    at, fmt = {"tag": (0, "H"), "type": (2, "H"), "count": (4, "I"), "value": (8, "I")}[field]
    blob[entry + at : entry + at + struct.calcsize(fmt)] = struct.pack(order + fmt, new)
    path.write_bytes(bytes(blob))
    return f"IFD entry of tag {tag}: {field} set to {new}"


def damage_ifd_offset(path: Path, rng: np.random.Generator) -> str:
    blob = bytearray(path.read_bytes())
    order, entries, pointers = ifd_entries(bytes(blob))
    if not pointers or len(blob) < 8:
        return cut_short(path, rng)
    pointer = int(rng.choice(pointers))
    first = struct.unpack(order + "I", blob[4:8])[0]
    choices = [0, 1, 7, 8, len(blob), len(blob) + 10**6, 2**32 - 1, first, pointer - 2]
    choices += [int(rng.integers(0, len(blob)))] + ([pointer - 2 - 12 * 3] if entries else [])
    new = int(rng.choice(choices))
    blob[pointer : pointer + 4] = struct.pack(order + "I", new % 2**32)
    path.write_bytes(bytes(blob))
    return f"IFD pointer at byte {pointer} set to {new}"


def damage_strips(path: Path, rng: np.random.Generator) -> str:
    """Strip or tile byte counts (or offsets) of one page set to nonsense."""
    blob = bytearray(path.read_bytes())
    order, entries, _ = ifd_entries(bytes(blob))
    targets = []
    for entry in entries:
        tag, kind, count = struct.unpack(order + "HHI", blob[entry : entry + 8])
        if tag in (273, 279, 324, 325) and kind in (3, 4):
            targets.append((entry, tag, kind, count))
    if not targets:
        return damage_ifd_entry(path, rng)
    entry, tag, kind, count = targets[int(rng.integers(len(targets)))]
    width = TIFF_TYPES[kind]
    values = (
        entry + 8 if count * width <= 4 else struct.unpack(order + "I", blob[entry + 8 :][:4])[0]
    )
    k = int(rng.integers(count))
    where = values + k * width
    if where + width > len(blob):
        return damage_ifd_entry(path, rng)
    top = 2 ** (8 * width) - 1
    new = int(rng.choice([0, 1, top, len(blob), int(rng.integers(0, top))]))
    blob[where : where + width] = struct.pack(order + ("H" if width == 2 else "I"), new)
    path.write_bytes(bytes(blob))
    return f"tag {tag} value {k} of {count} set to {new}"


#: How an ImageJ description or OME-XML is damaged: a pattern and what it becomes.
TEXT_EDITS = (
    (r"images=\d+", ["images=0", "images=9999999", "images=-3", "images=x"]),
    (r"slices=\d+", ["slices=0", "slices=7", "slices=100000"]),
    (r"spacing=[\d.]+", ["spacing=nan", "spacing=-1", "spacing=1e400", "spacing=abc"]),
    (r"unit=\w+", ["unit=", "unit=\\u00b5m", "unit=parsec"]),
    (r'SizeZ="\d+"', ['SizeZ="0"', 'SizeZ="7"', 'SizeZ="-1"', 'SizeZ="99999999999"']),
    (r'SizeX="\d+"', ['SizeX="1"', 'SizeX="100000"', 'SizeX="x"']),
    (r'Type="\w+"', ['Type="int64"', 'Type="bit"', 'Type="double"', 'Type="nonsense"']),
    (r'DimensionOrder="\w+"', ['DimensionOrder="XYZCT"', 'DimensionOrder="QQQQQ"']),
    (r'PhysicalSizeX="[\d.]+"', ['PhysicalSizeX="nan"', 'PhysicalSizeX="-2"', 'PhysicalSizeX=""']),
    (r"</\w+>", ["", "</Wrong>", "<Unclosed>"]),
    (r'"ZYX"', ['"QQQ"', '"ZZZ"', '"TZCYX"', '""']),
    (r'"shape": \[[^\]]*\]', ['"shape": [3, 40]', '"shape": []', '"shape": [9, 9, 9, 9, 9]']),
)


def damage_description(path: Path, rng: np.random.Generator) -> str:
    """The first page's ImageDescription (ImageJ's, OME-XML or tifffile's JSON) edited."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            text = tif.pages.first.description
    except Exception:
        return flip_bytes(path, rng)
    edits = [(p, r) for p, r in TEXT_EDITS if re.search(p, text)]
    if text and edits and rng.integers(4):
        pattern, replacements = edits[int(rng.integers(len(edits)))]
        replacement = str(rng.choice(replacements))
        new = re.sub(pattern, lambda _: replacement, text, count=1)
        how = f"description: {pattern} edited"
    elif text:
        start = int(rng.integers(len(text)))
        new = text[:start] + text[start + int(rng.integers(1, 40)) :]
        how = f"description: cut at {start}"
    else:
        new, how = "<OME><Image/></OME>", "description: a bare OME element"
    try:
        tifffile.tiffcomment(path, new.encode("utf-8", "surrogateescape"))
    except Exception:
        return flip_bytes(path, rng)
    return how


def json_files(store: Path) -> list[Path]:
    names = ("zarr.json", ".zarray", ".zattrs", ".zgroup")
    return sorted(p for p in store.rglob("*") if p.name in names)


def chunk_files(store: Path) -> list[Path]:
    meta = ("zarr.json", ".zarray", ".zattrs", ".zgroup")
    return sorted(p for p in store.rglob("*") if p.is_file() and p.name not in meta)


def leaves(node: object, where: tuple = ()) -> list[tuple]:
    """Paths to every value of a JSON document."""
    found = [where]
    if isinstance(node, dict):
        for key, value in node.items():
            found += leaves(value, (*where, key))
    elif isinstance(node, list):
        for k, value in enumerate(node):
            found += leaves(value, (*where, k))
    return found


#: Values a piece of zarr metadata is replaced with.
JSON_VALUES = (None, -1, 0, 1, 2**63, 1e308, "", "x", "<u2", "|b1", "float16", [], [0], [2**31],
               {}, {"name": "bogus"}, True, [-1, -1, -1], "nan")  # fmt: skip


def damage_zarr_metadata(store: Path, rng: np.random.Generator) -> str:
    files = json_files(store)
    if not files:
        return damage_zarr_chunks(store, rng)
    path = files[int(rng.integers(len(files)))]
    if rng.integers(5) == 0:
        return f"{path.name}: " + (cut_short if rng.integers(2) else flip_bytes)(path, rng)
    doc = json.loads(path.read_text())
    where = leaves(doc)[1:] or [()]
    target = where[int(rng.integers(len(where)))]
    parent = doc
    for key in target[:-1]:
        parent = parent[key]
    value = JSON_VALUES[int(rng.integers(len(JSON_VALUES)))]
    if not target:
        doc = value
    elif rng.integers(4) == 0 and isinstance(parent, dict):
        del parent[target[-1]]
        value = "(deleted)"
    else:
        parent[target[-1]] = value
    path.write_text(json.dumps(doc))
    return f"{path.relative_to(store)}: {'/'.join(map(str, target))} = {value!r}"


def damage_zarr_chunks(store: Path, rng: np.random.Generator) -> str:
    chunks = chunk_files(store)
    if not chunks:
        return damage_zarr_metadata(store, rng)
    chunk = chunks[int(rng.integers(len(chunks)))]
    how = int(rng.integers(5))
    if how == 0:
        chunk.unlink()
        return f"chunk {chunk.relative_to(store)} deleted"
    if how == 1:
        chunk.write_bytes(b"")
        return f"chunk {chunk.relative_to(store)} emptied"
    if how == 2:
        chunk.write_bytes(rng.integers(0, 256, int(rng.integers(1, 4000)), np.uint8).tobytes())
        return f"chunk {chunk.relative_to(store)} replaced by garbage"
    if how == 3:
        other = chunks[int(rng.integers(len(chunks)))]
        chunk.write_bytes(other.read_bytes() * int(rng.integers(1, 3)))
        return f"chunk {chunk.relative_to(store)} replaced by {other.name}'s bytes"
    return f"chunk {chunk.relative_to(store)}: " + flip_bytes(chunk, rng)


def damage_folder(folder: Path, rng: np.random.Generator) -> str:
    """One plane damaged or replaced, or something odd added to the folder."""
    import imageio.v3 as iio

    planes = sorted(p for p in folder.iterdir() if p.is_file())
    plane = planes[int(rng.integers(len(planes)))]
    how = int(rng.integers(9))
    if how == 0:
        return f"{plane.name}: " + cut_short(plane, rng)
    if how == 1:
        return f"{plane.name}: " + flip_bytes(plane, rng)
    if how == 2:
        for other in planes[1:]:
            other.unlink()
        return "all planes but one deleted"
    if how == 3:
        shape = [(40, 47), (1, 1), (40, 48, 4), (40, 48, 2), (0, 48)][int(rng.integers(5))]
        dtype = ["uint8", "uint16", "float32", "bool"][int(rng.integers(4))]
        odd = np.zeros(shape, dtype)
        try:
            iio.imwrite(folder / f"z9{plane.suffix}", odd)
        except Exception:
            (folder / f"z9{plane.suffix}").write_bytes(b"\0" * 64)
        return f"a plane of shape {shape} and type {dtype} added"
    if how == 4:
        (folder / "z99.png").mkdir()
        return "a folder named like a plane added"
    if how == 5:
        (folder / "z98.tif").symlink_to(folder / "missing.tif")
        return "a dangling link named like a plane added"
    if how == 6:
        name = os.fsdecode(b"z\xff\xfe\n97" + plane.suffix.encode())
        shutil.copy(plane, folder / name)
        return "a plane named with undecodable bytes and a newline added"
    if how == 7:
        (folder / "notes.txt").write_text("not an image")
        (folder / "z0.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 20)
        return "a text file and a broken JPEG added"
    plane.write_bytes(b"")
    return f"{plane.name} emptied"


#: The mutations that apply to each kind of input.
TIFF_MUTATIONS: tuple[Callable[[Path, np.random.Generator], str], ...] = (
    flip_bytes, cut_short, damage_ifd_entry, damage_ifd_offset, damage_strips, damage_description
)  # fmt: skip
ZARR_MUTATIONS = (damage_zarr_metadata, damage_zarr_chunks)


@dataclass(frozen=True)
class Case:
    index: int
    original: str
    damage: str
    inputs: list[str]
    output: str


def make_case(seed: int, index: int, folder: Path) -> Case:
    """Case ``index`` of corpus ``seed``, written into ``folder`` (empty)."""
    rng = np.random.default_rng([seed, index])
    original = ORIGINALS[index % len(ORIGINALS)]
    path = write_original(original, folder, rng)
    if original.endswith("planes"):
        damage = damage_folder(path, rng)
    elif path.is_dir():
        damage = ZARR_MUTATIONS[int(rng.integers(len(ZARR_MUTATIONS)))](path, rng)
    else:
        damage = TIFF_MUTATIONS[int(rng.integers(len(TIFF_MUTATIONS)))](path, rng)
    output = OUTPUTS[(index // len(ORIGINALS)) % len(OUTPUTS)]
    return Case(index, original, damage, [str(path)], output)


# ---------------------------------------------------------------------------------------------
# One run, judged


def one_sentence(message: str) -> bool:
    return message.endswith(".") and ". " not in ABBREVIATIONS.sub("", message)


def judge(code: int, stderr: str, left: list[str], output: str) -> tuple[str, str]:
    """("fused" | "refused" | "finding", why) for one run's exit status, stderr and what its
    output folder holds afterwards."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("pdmfuse: error: ")]
    other = [
        line for line in lines if not line.startswith(("pdmfuse: error: ", "pdmfuse: warning: "))
    ]
    if other:
        return "finding", f"exit {code}; stray output: {other[-1][:300]}"
    if code == 0 and left == [output] and not errors:
        return "fused", ""
    if code == 2 and left == [] and len(errors) == 1 and errors == lines[-1:]:
        message = errors[0].removeprefix("pdmfuse: error: ")
        if one_sentence(message):
            return "refused", message
        return "finding", f"not one sentence: {message[:300]}"
    return "finding", f"exit {code}; left {left}; stderr: {' | '.join(lines)[-300:]}"


def run_case(seed: int, index: int) -> dict[str, object]:
    """Make case ``index`` in a scratch folder and fuse it with the command, in this process."""
    from napari_pdmfuse.cli import main

    with tempfile.TemporaryDirectory(prefix="pdmfuse-fuzz-") as tmp:
        folder, out = Path(tmp) / "in", Path(tmp) / "out"
        folder.mkdir()
        out.mkdir()
        case = make_case(seed, index, folder)
        err = io.StringIO()
        args = ["fuse", *case.inputs, "-o", str(out / case.output), "--method", "argmax", "-q"]
        began = time.perf_counter()
        with contextlib.redirect_stderr(err), warnings.catch_warnings():  # Python's defaults
            try:
                code = main(args)
            except BaseException as exc:  # anything escaping the command is a finding
                code, err = -1, io.StringIO(f"escaped: {type(exc).__name__}: {exc}")
        seconds = time.perf_counter() - began
        left = sorted(os.fsdecode(name) for name in os.listdir(out))
    outcome, why = judge(code, err.getvalue(), left, case.output)
    return {"index": index, "original": case.original, "damage": case.damage,
            "output": case.output, "outcome": outcome, "why": why,
            "seconds": round(seconds, 3)}  # fmt: skip


def worker(seed: int) -> None:
    """Run the case numbers read from stdin, one JSON line each on stdout, after a line saying
    that the libraries are loaded (so that a run's time counts its own work only)."""
    import dask.array  # noqa: F401
    import tifffile  # noqa: F401
    import zarr  # noqa: F401

    import napari_pdmfuse.cli
    import napari_pdmfuse.files  # noqa: F401

    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but results on the pipe
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        result = run_case(seed, int(line))
        out.write(json.dumps(result) + "\n")
        out.flush()


#: Seconds a worker may take to load its libraries (a busy machine's cold start).
START_BOUND = 900


class Runner:
    """Cases run in a worker process, restarted after a case that hangs past ``bound`` seconds
    (killed) or that kills it (a crash of the interpreter)."""

    def __init__(self, seed: int, bound: float) -> None:
        self.seed, self.bound = seed, bound
        self.process: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        if self.process is None or self.process.poll() is not None:
            env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
            code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            code += f"import fuzz_corpus; fuzz_corpus.worker({self.seed})"
            self.process = subprocess.Popen(
                [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True, env=env,
            )  # fmt: skip
            assert self.process.stdout is not None
            ready, _, _ = select.select([self.process.stdout], [], [], START_BOUND)
            if not ready or self.process.stdout.readline() != "ready\n":
                self.process.kill()
                raise RuntimeError(f"the fuzzing worker did not start in {START_BOUND} s")
        return self.process

    def run(self, index: int) -> dict[str, object]:
        process = self._start()
        assert process.stdin is not None and process.stdout is not None
        began = time.perf_counter()
        process.stdin.write(f"{index}\n")
        process.stdin.flush()
        ready, _, _ = select.select([process.stdout], [], [], self.bound)
        line = process.stdout.readline() if ready else ""
        if line:
            result = json.loads(line)
            if result["seconds"] > self.bound:
                result["outcome"], result["why"] = "finding", f"took {result['seconds']} s"
            return result
        seconds = round(time.perf_counter() - began, 3)
        if not ready:
            process.kill()
        process.wait()
        what = "hang" if not ready else f"worker died (status {process.returncode})"
        return {"index": index, "original": ORIGINALS[index % len(ORIGINALS)], "damage": "?",
                "output": "?", "outcome": "finding", "why": what, "seconds": seconds}  # fmt: skip

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(timeout=60)
