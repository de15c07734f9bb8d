import os
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data"
GOLDEN = DATA / "golden" / "infinity_tiny_golden.safetensors"
# Infinity-8B code path (spatial patchify), negative prompts, per-scale cfg starting at 1, tau list, 2 ratios
GOLDEN_PATCHIFY = DATA / "golden" / "infinity_tiny_patchify_neg_golden.safetensors"
MANIFESTS = sorted((DATA / "manifests").glob("*.json"))


@pytest.fixture(scope="session", autouse=True)
def offline(tmp_path_factory):
    """No hub access ever: a silent download or an empty tokenizer must fail loudly here."""
    home = tmp_path_factory.mktemp("hf_home")
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "TORCH_HOME")}
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(home), TORCH_HOME=str(home))
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory):
    from ttsvar_core.testing.tiny_models import write_tiny_models
    return write_tiny_models(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="session")
def data_dir():
    return DATA


@pytest.fixture(scope="session")
def golden_path():
    return GOLDEN


@pytest.fixture(scope="session")
def patchify_golden_path():
    return GOLDEN_PATCHIFY


@pytest.fixture(scope="session")
def manifests():
    return MANIFESTS
