"""The Haar DWT that PDMNet's encoder is fed with."""

import numpy as np
import pywt
import torch

from napari_pdmfuse.model.dwt import DWT


def test_haar_level_matches_pywavelets():
    rng = np.random.default_rng(5)
    x = rng.random((2, 3, 10, 14), dtype=np.float32)
    bands = DWT()(torch.from_numpy(x)).numpy()
    assert bands.shape == (2, 12, 5, 7)
    approx, (along_y, along_x, diagonal) = pywt.dwt2(x, "haar", axes=(-2, -1))
    expected = np.concatenate([approx, along_y, along_x, diagonal], axis=1)
    np.testing.assert_allclose(bands, expected, atol=1e-6)
