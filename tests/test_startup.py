"""Start-up: each job imports only what it uses.

Importing torch, napari, distributed or xarray costs from a fifth of a second to a second each,
which a short ``pdmfuse`` run (docs/PERFORMANCE.md, *Start-up*) or a script that only fuses
with a classical method would pay for nothing. Each check runs in a fresh interpreter and looks
at the modules it loaded, so it holds however fast or busy the machine is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import tifffile

import napari_pdmfuse

#: Never needed to fuse or to start the command: the viewer, the cluster client, the plane
#: formats' reader, and the libraries of the alignment (scikit-image, SciPy's optimisers and
#: signal code).
NEVER = ["napari", "magicgui", "qtpy", "distributed", "imageio", "skimage", "scipy.optimize",
         "scipy.signal"]  # fmt: skip

#: What dask.array would load for nothing, which the command's launcher keeps out.
DASK_EXTRAS = ["xarray", "pandas", "scipy.fftpack"]

#: Prints the modules loaded by the end of the process, whatever ends it (launch() exits).
REPORT = """
import atexit, json, sys
atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.__stdout__))
"""


def loaded(code: str, cwd: Path | None = None) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``code``."""
    done = subprocess.run(
        [sys.executable, "-c", REPORT + code],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def command(tmp_path: Path, method: str) -> set[str]:
    """The modules ``pdmfuse fuse`` loads to fuse a 3-plane TIFF into TIFFs with ``method``."""
    data = np.random.default_rng(0).integers(0, 60_000, (3, 64, 64), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", data, imagej=True, metadata={"axes": "ZYX"})
    args = ["pdmfuse", "fuse", "stack.tif", "-o", "f.tif", "--focus-map", "m.tif", "-q",
            "--method", method]  # fmt: skip
    modules = loaded(
        f"import sys; sys.argv = {args!r}\nfrom napari_pdmfuse.entry import launch\nlaunch()",
        cwd=tmp_path,
    )
    assert tifffile.imread(tmp_path / "f.tif").shape == (64, 64)
    return modules


def present(modules: set[str], names: list[str]) -> list[str]:
    return [name for name in names if name in modules]


def test_importing_the_package_loads_nothing_heavy():
    modules = loaded("import napari_pdmfuse")
    assert present(modules, ["torch", "dask", "scipy", "tifffile", *NEVER]) == []


def test_the_public_names_load_on_first_use():
    namespace: dict[str, object] = {}
    exec("from napari_pdmfuse import *", namespace)
    assert set(napari_pdmfuse.__all__) <= set(namespace)
    assert set(napari_pdmfuse.__all__) <= set(dir(napari_pdmfuse))
    assert napari_pdmfuse.FuseOptions().method in napari_pdmfuse.METHODS
    with pytest.raises(AttributeError, match="no_such_name"):
        napari_pdmfuse.no_such_name  # noqa: B018


def test_a_classical_fusion_in_python_loads_no_torch():
    modules = loaded(
        "import numpy as np, napari_pdmfuse\n"
        "stack = np.random.default_rng(0).random((3, 32, 32))\n"
        "assert napari_pdmfuse.fuse(stack, method='wavelet').fused.shape == (32, 32)"
    )
    assert present(modules, ["torch", "napari", "magicgui", "distributed"]) == []


def test_the_command_module_loads_no_viewer_cluster_or_torch():
    modules = loaded("import napari_pdmfuse.cli")
    assert present(modules, ["torch", *NEVER]) == []


@pytest.mark.parametrize("method", ["wavelet", "pyramid", "argmax"])
def test_the_command_with_a_classical_method_loads_no_torch_and_no_zarr(tmp_path, method):
    modules = command(tmp_path, method)
    assert present(modules, ["torch", "zarr", *DASK_EXTRAS, *NEVER]) == []


def test_the_command_with_pdmnet_loads_torch_but_no_viewer_or_cluster(tmp_path):
    modules = command(tmp_path, "pdmnet")
    assert "torch" in modules
    assert present(modules, ["zarr", *DASK_EXTRAS, *NEVER]) == []


@pytest.mark.parametrize(
    ("module", "use"),
    [("xarray", "xarray.DataArray([1, 2])"), ("scipy.fftpack", "scipy.fftpack.fft([1.0, 2.0])")],
)
def test_what_the_command_kept_out_of_dask_stays_importable(module, use):
    pytest.importorskip(module)
    modules = loaded(
        "import sys\nfrom napari_pdmfuse.entry import load_dask_array\nload_dask_array()\n"
        f"assert 'dask.array' in sys.modules and {module!r} not in sys.modules\n"
        f"import {module}\n{use}"
    )
    assert module in modules


def test_the_pdmfuse_script_starts_through_the_quiet_launcher():
    scripts = metadata.entry_points(group="console_scripts")
    assert [s.value for s in scripts if s.name == "pdmfuse"] == ["napari_pdmfuse.entry:launch"]


@pytest.mark.slow
def test_the_closing_line_counts_from_the_interpreters_start_not_the_shells(tmp_path):
    """A shell that execs the command hands over its process, with the time it ran before:
    ``bash -c 'sleep 3; exec pdmfuse …'`` must not report the sleep."""
    data = np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", data, photometric="minisblack")
    script = 'sleep 3; exec "$0" -m napari_pdmfuse fuse stack.tif -o f.tif --method argmax'
    done = subprocess.run(
        ["bash", "-c", script, sys.executable], capture_output=True, text=True, cwd=tmp_path,
        timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    closing = done.stderr.strip().splitlines()[-1]
    seconds = float(closing.split(" in ")[1].split(" s ")[0])
    assert closing.startswith("pdmfuse: fused 3 planes of 64×64 with argmax in ")
    assert 0 < seconds < 3, closing
