"""Shared by the benchmark scripts: the machine, the methods (ours and other tools), tables."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "benchmarks" / ".cache"

BUILTIN = ("pdmnet", "wavelet", "pyramid", "argmax")
#: Our methods with a non-default option, as a user would set it: name → (method, options).
VARIANTS = {
    "pdmnet-bc": ("pdmnet", {"correct_brightness": True}),  # --correct-brightness
    "pdmnet-hard": ("pdmnet", {"selection": "hard"}),  # --selection hard
}
EXTERNAL = ("enfuse", "openfocus-dtcwt", "openfocus-stackmffv3", "clesperanto-edf")
METHODS = BUILTIN + tuple(VARIANTS) + EXTERNAL

logging.getLogger("tifffile").setLevel(logging.CRITICAL)  # OpenFocus' grey TIFFs: 3 samples


class Skip(Exception):
    """A method that cannot run here; the message says why."""


@dataclass
class Run:
    fused: np.ndarray  # the stack's layout: (Y, X) grey or (Y, X, 3) RGB
    focus: np.ndarray | None  # slice units; None when the tool gives no focus map
    seconds: float
    rss_mb: float | None = None  # the tool's peak RSS, for other tools


# ---------------------------------------------------------------------------------------------
# The machine


def machine() -> dict:
    import torch

    cpu, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as info:
            lines = info.read().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if "model name" in line)
        flags = set(next(line for line in lines if line.startswith("flags")).split())
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu,
        # PyTorch's speed moves with these: AVX-512 (and its bf16/VNNI parts) or only AVX2.
        "vector": " ".join(sorted(f for f in flags if f.startswith(("avx", "amx")))) or "unknown",
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    return info


def describe_machine(info: dict) -> str:
    gpu = f"CUDA: {info['cuda']}" if info["cuda"] else "no CUDA"
    return (
        f"Machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable); "
        f"vector flags: {info['vector']} (torch uses {info['torch_cpu_capability']}); "
        f"Python {info['python']}, torch {info['torch']}, numpy {info['numpy']}; {gpu}"
    )


# ---------------------------------------------------------------------------------------------
# Other tools, run as their users run them: command lines on image files


def openfocus_bin() -> str | None:
    """OpenFocus' CLI: $OPENFOCUS, else the side venv .venv-openfocus, else `openfocus` on PATH."""
    for candidate in (os.environ.get("OPENFOCUS"), REPO / ".venv-openfocus/bin/openfocus"):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return shutil.which("openfocus")


def clesperanto_python() -> str | None:
    """A Python with pyclesperanto: $CLESPERANTO_PYTHON, else the side venv's, if it imports it."""
    for candidate in (os.environ.get("CLESPERANTO_PYTHON"), REPO / ".venv-openfocus/bin/python"):
        if candidate and Path(candidate).is_file():
            check = subprocess.run([candidate, "-c", "import pyclesperanto"], capture_output=True)
            return str(candidate) if check.returncode == 0 else None
    return None


def tool_versions() -> dict:
    versions = {}
    if shutil.which("enfuse"):
        out = subprocess.run(["enfuse", "--version"], capture_output=True, text=True).stdout
        versions["enfuse"] = out.splitlines()[0] if out else "enfuse (unknown version)"
    if binary := openfocus_bin():
        python = Path(binary).with_name("python")
        code = "import importlib.metadata as m; print(m.version('openfocus'))"
        out = subprocess.run([python, "-c", code], capture_output=True, text=True).stdout
        versions["openfocus"] = f"openfocus {out.strip() or '(unknown version)'} ({binary})"
    if python := clesperanto_python():
        code = "import pyclesperanto as c; print(c.__version__, c.list_available_devices())"
        out = subprocess.run([python, "-c", code], capture_output=True, text=True).stdout
        versions["clesperanto"] = f"pyclesperanto {out.strip() or '(unknown version)'} ({python})"
    return versions


def enfuse_command(planes: list[str], out: Path) -> list[str]:
    return [
        "enfuse", "--exposure-weight=0", "--saturation-weight=0", "--contrast-weight=1",
        "--hard-mask", f"--output={out}", *planes,
    ]  # fmt: skip


def openfocus_command(method: str, planes: list[str], out: Path, device: str) -> list[str]:
    """Default settings (no registration, exposure matching on), plus its focus map in grey."""
    depth = out.with_name("depth.png")
    cmd = [openfocus_bin(), "--input", *planes, "--output", str(out), "--method", method]
    cmd += ["--depth-map", str(depth), "--depth-colormap", "gray"]
    return [*cmd, "--cpu"] if device == "cpu" else cmd


def check_available(name: str, device: str) -> None:
    """Raise Skip when ``name`` cannot run on this machine at all."""
    if name in BUILTIN or name in VARIANTS:
        from napari_pdmfuse.methods import get_method

        try:
            get_method(VARIANTS.get(name, (name,))[0], device=device)
        except Exception as err:
            raise Skip(f"{type(err).__name__}: {err}") from None
    elif name == "enfuse" and not shutil.which("enfuse"):
        raise Skip("enfuse is not installed (Debian/Ubuntu: apt-get install enfuse)")
    elif name.startswith("openfocus-") and not openfocus_bin():
        raise Skip("OpenFocus is not installed (python3 -m venv .venv-openfocus && "
                   ".venv-openfocus/bin/pip install openfocus)")  # fmt: skip
    elif name == "clesperanto-edf" and not clesperanto_python():
        raise Skip("pyclesperanto is not installed (apt-get install pocl-opencl-icd, then "
                   ".venv-openfocus/bin/pip install pyclesperanto)")  # fmt: skip
    elif name not in METHODS:
        raise Skip(f"unknown method; choose from {', '.join(METHODS)}")


def _layout(image: np.ndarray, stack: np.ndarray) -> np.ndarray:
    """Drop what a tool adds: enfuse's alpha channel, OpenFocus' grey-as-BGR copies."""
    if stack.ndim == 3:
        return image if image.ndim == 2 else image[..., 0]
    return image[..., :3]


# On Linux ru_maxrss survives fork + exec: a process started straight from a big one (a Python
# holding a stack, or having imported torch) reports at least its parent's size. Started from
# this small launcher instead, it reports its own; the launcher also times it.
LAUNCHER = """import os, resource, sys, time
start = time.perf_counter()
status = os.spawnvp(os.P_WAIT, sys.argv[2], sys.argv[2:])
seconds = time.perf_counter() - start
with open(sys.argv[1], "w") as out:
    out.write(f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss} {seconds}")
sys.exit(status if status >= 0 else 1)
"""


def spawn(cmd: list[str]) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run ``cmd`` through the launcher; return the process, its seconds and peak RSS (MB)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "rusage"
        launch = [sys.executable, "-c", LAUNCHER, str(report), *cmd]
        proc = subprocess.run(launch, capture_output=True, text=True)
        kib, seconds = report.read_text().split() if report.is_file() else ("nan", "nan")
    return proc, float(seconds), float(kib) / 1024


def run_clesperanto(stack: np.ndarray) -> Run:
    """clesperanto's variance EDF with its defaults, in its own Python (timed: start-up and
    OpenCL set-up included), each colour channel on its own: it takes grey stacks only."""
    with tempfile.TemporaryDirectory(prefix="pdmfuse-bench-") as tmp:
        source, out = Path(tmp) / "stack.npy", Path(tmp) / "fused.npy"
        np.save(source, stack)
        script = REPO / "benchmarks" / "clesperanto_edf.py"
        proc, seconds, rss_mb = spawn([clesperanto_python(), str(script), str(source), str(out)])
        if proc.returncode or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise Skip(f"pyclesperanto failed with exit code {proc.returncode}: {tail[0]}")
        fused = np.load(out)
    return Run(fused=fused, focus=None, seconds=seconds, rss_mb=rss_mb)


def run_external(name: str, stack: np.ndarray, device: str = "auto") -> Run:
    """Write the planes as TIFFs, run the tool's command line on them (timed), read the result."""
    if name == "clesperanto-edf":
        return run_clesperanto(stack)
    if stack.dtype not in (np.uint8, np.uint16):
        raise Skip(f"{name} reads 8/16-bit image files; the stack is {stack.dtype}")
    with tempfile.TemporaryDirectory(prefix="pdmfuse-bench-") as tmp:
        folder = Path(tmp)
        planes = []
        for k, plane in enumerate(stack):
            planes.append(str(folder / f"plane{k:03d}.tif"))
            tifffile.imwrite(planes[-1], plane, photometric="rgb" if plane.ndim == 3 else None)
        out = folder / "fused.tif"
        if name == "enfuse":
            cmd = enfuse_command(planes, out)
        else:
            cmd = openfocus_command(name.removeprefix("openfocus-"), planes, out, device)
        proc, seconds, rss_mb = spawn(cmd)
        if proc.returncode or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise Skip(f"{cmd[0]} failed with exit code {proc.returncode}: {tail[0]}")
        fused = _layout(tifffile.imread(out), stack)
        focus = None
        if (depth := folder / "depth.png").is_file():
            import imageio.v3 as iio

            focus = iio.imread(depth)[..., 0] / 255.0 * (len(stack) - 1)
    return Run(fused=fused, focus=focus, seconds=seconds, rss_mb=rss_mb)


def run_method(
    name: str, stack: np.ndarray, device: str = "auto", weights: str | None = None
) -> Run:
    """Fuse ``stack`` (Z, Y, X[, 3]) with one method; raise Skip if it cannot run or fails.

    ``weights``: a PDMNet weights file for the PDMNet methods instead of the shipped one."""
    if name not in BUILTIN and name not in VARIANTS:
        check_available(name, device)
        return run_external(name, stack, device)
    import napari_pdmfuse

    method, options = VARIANTS.get(name, (name, {}))
    if weights and method == "pdmnet":
        options = {**options, "weights": weights}
    start = time.perf_counter()
    try:
        result = napari_pdmfuse.fuse(stack, method=method, device=device, **options)
    except Exception as err:
        raise Skip(f"{type(err).__name__}: {err}") from None
    return Run(result.fused, result.focus_map, time.perf_counter() - start)


def run_cached(name: str, stack: np.ndarray, device: str = "auto") -> Run:
    """:func:`run_method` for another tool, its result kept in ``benchmarks/.cache`` by the
    stack's content, so a rerun on the same stacks is quick (our methods always run)."""
    if name not in EXTERNAL:
        return run_method(name, stack, device)
    digest = hashlib.sha1(stack.tobytes() + str((stack.shape, stack.dtype)).encode()).hexdigest()
    path = CACHE / "tools" / f"{name}-{digest[:20]}.npz"
    if path.is_file():
        with np.load(path) as saved:
            focus = saved["focus"] if saved["focus"].ndim else None
            rss = float(saved["rss_mb"])
            return Run(saved["fused"], focus, float(saved["seconds"]), rss)
    run = run_method(name, stack, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    focus = np.array(np.nan) if run.focus is None else run.focus
    rss = np.nan if run.rss_mb is None else run.rss_mb
    np.savez(path, fused=run.fused, focus=focus, seconds=run.seconds, rss_mb=rss)
    return run


# ---------------------------------------------------------------------------------------------
# Output


def parse_weights(text: str | None) -> dict[str, tuple[str, str]]:
    """``NAME=PATH,...`` → {method name: (our method it runs, weights file)}; a NAME without
    ``@`` is a label for ``pdmnet``."""
    extra = {}
    for item in filter(None, (text or "").split(",")):
        name, _, path = item.partition("=")
        base, at, _ = name.partition("@")
        if not path or (at and base not in ("pdmnet", *VARIANTS)):
            raise SystemExit(f"--weights: {item!r} is not NAME=PATH with NAME pdmnet[-…]@label")
        extra[name if at else f"pdmnet@{name}"] = (base if at else "pdmnet", path)
    return extra


def finite(obj: object) -> object:
    """JSON-safe copy: NaN and infinities become null."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def fmt(value: float | None, digits: int) -> str:
    if value is None or not np.isfinite(value):
        return "—" if value is None or np.isnan(value) else str(value)
    return f"{value:.{digits}f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in [headers, *rows]]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
