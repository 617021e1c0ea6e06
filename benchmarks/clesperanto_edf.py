"""clesperanto's variance extended-depth-of-focus projection of a stack, run in the Python that
has pyclesperanto (common.clesperanto_python): ``python clesperanto_edf.py stack.npy out.npy``.

The stack is (Z, Y, X) or (Z, Y, X, C); each channel is projected on its own, with the
function's default neighbourhood (radius 10 px) and smoothing (sigma 5), as float32.
"""

import sys

import numpy as np
import pyclesperanto as cle


def main(source: str, out: str) -> None:
    stack = np.load(source).astype(np.float32)
    channels = stack[..., None] if stack.ndim == 3 else stack
    fused = [
        np.asarray(
            cle.pull(
                cle.extended_depth_of_focus_variance_projection(
                    np.ascontiguousarray(channels[..., c])
                )
            )
        )
        for c in range(channels.shape[-1])
    ]
    np.save(out, np.stack(fused, -1)[..., 0] if stack.ndim == 3 else np.stack(fused, -1))


if __name__ == "__main__":
    main(*sys.argv[1:3])
