"""Fixtures of the training tests: a small crop cache of real LFW faces."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def crop_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 40 LFW images detected and aligned by the service's face path into a temporary cache folder (a
    few seconds); point `ANYFACE_CACHE_DIR` at it."""
    pytest.importorskip("torch", reason="training needs PyTorch: pip install .[train]")
    from training.data.lfw_crops import build_cache
    from training.testing import missing_lfw, missing_models

    if reason := missing_models() or missing_lfw():
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("cache")
    build_cache(out_dir=folder, limit=40)
    return folder
