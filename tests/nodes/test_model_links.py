"""Model files reached through links, as ComfyUI's own loaders reach them, and names that leave the model
folders, which never are."""
import json
import os
import shutil

import pytest

from ttsvar_core.model.checkpoints import CheckpointError, load_infinity, load_vae
from ttsvar_core.testing.tiny_models import write_tiny_models


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_models(tmp_path_factory.mktemp("shared_downloads"))


def test_a_linked_model_file_is_listed_and_resolved(pack, model_folder, tiny):
    glue = pack.nodes.comfy_glue
    folder = model_folder("infinity", ".safetensors", ".pth")
    (folder / "shared.safetensors").symlink_to(tiny["infinity_safetensors"])
    (folder / "linked_dir").symlink_to(tiny["infinity_patchify_shards"].parent, target_is_directory=True)
    names = glue.list_models("infinity")
    assert "shared.safetensors" in names
    assert "linked_dir/tiny_infinity_patchify_shards" in names
    for name in names:
        path = glue.resolve_model("infinity", name, "the Infinity model")
        assert os.path.exists(path)
        assert glue.missing_model_message("infinity", name, "the Infinity model") is None
    # the path is the link in the model folder, as folder_paths.get_full_path gives it
    assert glue.resolve_model("infinity", "shared.safetensors", "m") == str(folder / "shared.safetensors")
    assert pack.folder_paths.get_full_path("infinity", "shared.safetensors") == str(folder / "shared.safetensors")


@pytest.mark.parametrize("name", ["../outside.safetensors", "sub/../../outside.safetensors", "/etc/passwd",
                                  "..", ".", ""])
def test_names_that_climb_out_of_the_folder_are_refused(pack, model_folder, tiny, name):
    glue = pack.nodes.comfy_glue
    folder = model_folder("infinity", ".safetensors")
    shutil.copyfile(tiny["infinity_safetensors"], folder.parent / "outside.safetensors")
    (folder / "sub").mkdir()
    message = glue.missing_model_message("infinity", name, "the Infinity model")
    assert message is not None and "is not a name inside models/infinity" in message
    assert "choose it from the list" in message


def test_a_broken_link_is_named(pack, model_folder, tmp_path):
    glue = pack.nodes.comfy_glue
    folder = model_folder("infinity", ".safetensors")
    (folder / "gone.safetensors").symlink_to(tmp_path / "deleted.safetensors")
    with pytest.raises(FileNotFoundError) as missing:
        glue.resolve_model("infinity", "gone.safetensors", "the Infinity model")
    assert f"is a link to {tmp_path / 'deleted.safetensors'}, which does not exist" in str(missing.value)


def _shards_with_entry(tiny, tmp_path, rewrite):
    folder = tmp_path / "shards"
    shutil.copytree(tiny["infinity_patchify_shards"], folder)
    index = folder / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"] = {key: rewrite(shard, folder) for key, shard in data["weight_map"].items()}
    index.write_text(json.dumps(data))
    return folder


def test_a_linked_shard_inside_its_folder_loads(tiny, tmp_path):
    def link(shard, folder):
        if not (folder / f"linked-{shard}").exists():
            (folder / f"linked-{shard}").symlink_to(tiny["infinity_patchify_shards"] / shard)
            (folder / shard).unlink()
        return f"linked-{shard}"
    folder = _shards_with_entry(tiny, tmp_path, link)
    vae = load_vae(tiny["vae_patchify_pth"])
    model = load_infinity(folder, vae_cfg=vae.cfg)
    reference = load_infinity(tiny["infinity_patchify_shards"], vae_cfg=vae.cfg)
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert a.equal(b), name


@pytest.mark.parametrize("outside", ["../elsewhere/{}", "/abs/{}", "sub/../../{}", "..\\{}"])
def test_a_shard_index_pointing_outside_its_folder_is_refused(tiny, tmp_path, outside):
    folder = _shards_with_entry(tiny, tmp_path, lambda shard, _: outside.format(shard))
    with pytest.raises(CheckpointError) as refused:
        load_infinity(folder)
    message = str(refused.value)
    assert "model.safetensors.index.json" in message and "lies outside that folder" in message
    assert "may only name files in its own folder" in message


def test_hugging_face_folders_refuse_shards_outside_them(tiny, tmp_path):
    from ttsvar_core.model.files import check_shard_index
    from ttsvar_core.model.text import TextEncoder, TextEncoderError
    t5 = tmp_path / "t5"
    shutil.copytree(tiny["t5"], t5)
    weights = next(t5.glob("*.safetensors"))
    (t5 / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"shared.weight": f"../../{weights.name}"}}))
    weights.unlink()
    assert "lies outside that folder" in check_shard_index(t5)
    with pytest.raises(TextEncoderError, match="lies outside that folder"):
        TextEncoder(t5)
