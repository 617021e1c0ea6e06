"""Shared fixtures: small rendered stacks with ground truth."""

from __future__ import annotations

import pytest

from napari_pdmfuse.training.rendering import RenderedStack, demo_stack


@pytest.fixture(scope="session")
def grey_stack() -> RenderedStack:
    return demo_stack()


@pytest.fixture(scope="session")
def rgb_stack() -> RenderedStack:
    return demo_stack(6, rgb=True, bits=8, seed=1)
