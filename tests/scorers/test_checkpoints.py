"""Safe file reading and recognising what a wrong file is."""

import collections
import os
from pathlib import Path

import pytest
import torch

from scorer_testlib import fake_full_size
from ttsvar_core.scorers import WrongFileError
from ttsvar_core.scorers.checkpoints import describe_found, read_tensors


class Pickled:  # any class outside torch's allow-list
    pass


def test_weights_only_refuses_python_objects(tmp_path):
    path = tmp_path / "ImageReward.pt"
    torch.save({"model": Pickled()}, path)
    with pytest.raises(WrongFileError, match="weights_only=True"):
        read_tensors(path, "ImageReward.pt")


def test_text_file_with_torch_extension(tmp_path):
    path = tmp_path / "ImageReward.pt"
    path.write_text("<html>404 Not Found</html>")
    with pytest.raises(WrongFileError, match="not a readable PyTorch file"):
        read_tensors(path, "ImageReward.pt")


def test_corrupt_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(WrongFileError, match="not a readable .safetensors file"):
        read_tensors(path, "DINOv2")


def test_unknown_extension(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx")
    with pytest.raises(WrongFileError, match="extension '.onnx'"):
        read_tensors(path, "DINOv2")


def test_non_dict_file(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(WrongFileError, match="holds a list"):
        read_tensors(path, "DINOv2")


def test_legacy_and_zip_formats_load_the_same(tmp_path):
    sd = collections.OrderedDict(a=torch.arange(6.0).reshape(2, 3), b=torch.ones(2))
    torch.save(sd, tmp_path / "new.pth")
    torch.save(sd, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    for name in ("new.pth", "old.pth"):
        loaded = read_tensors(Path(tmp_path / name), "test")
        assert set(loaded) == {"a", "b"} and torch.equal(loaded["a"], sd["a"])


@pytest.mark.parametrize("keys,label", [
    ("imagereward_state_dict_keys.txt", "ImageReward checkpoint"),
    ("hps_vith14_keys.txt", "open_clip / OpenAI CLIP checkpoint"),
    ("dinov2_hub_keys.txt", "official DINOv2 checkpoint with registers"),
    ("dinov2_timm224_keys.txt", "timm DINOv2-with-registers"),
    ("dinov2_hf_v5_keys.txt", "transformers DINOv2-with-registers"),
])
def test_real_files_are_recognised(keys, label):
    assert label in describe_found(fake_full_size(keys))


def test_unknown_file_shows_some_names():
    text = describe_found({"foo.weight": 1, "bar.bias": 2})
    assert "unrecognised" in text and "bar.bias" in text


def test_a_file_holding_code_is_refused_as_such(tmp_path):
    """torch words a function of a blocked module in lower case ('unsupported GLOBAL posix.getcwd whose module
    posix is blocked')."""
    path = tmp_path / "ImageReward.pt"
    torch.save({"hook": os.getcwd}, path)
    with pytest.raises(WrongFileError, match="cannot be loaded safely"):
        read_tensors(path, "ImageReward.pt")
