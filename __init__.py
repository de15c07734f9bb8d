"""ComfyUI entry point of the comfyui-ttsvar node pack.

ComfyUI imports this file as a package from its custom_nodes folder and registers
the nodes `comfy_entrypoint` hands it (the schema API's way; ComfyUI reads it only
when the module has no NODE_CLASS_MAPPINGS). It has a top-level module of its own
called ``nodes``, so the pack's nodes are reached only through a relative import.
"""

import os

from .nodes import comfy_entrypoint, shipped

WEB_DIRECTORY = "./web"

# Model folders this pack reads, under ComfyUI's models directory. The text
# encoder (a flan-t5-xl folder) goes into ComfyUI's existing "text_encoders".
_WEIGHT_EXTENSIONS = frozenset({".pth", ".safetensors"})
_CHECKPOINT_EXTENSIONS = frozenset({".pth", ".pt", ".bin", ".safetensors"})
MODEL_FOLDERS = {
    # Infinity transformers: single .pth/.safetensors files, or a sub-folder
    # holding the shards of the 8B model.
    "infinity": _WEIGHT_EXTENSIONS,
    "infinity_vae": _WEIGHT_EXTENSIONS,
    "ttsvar_rewards": _CHECKPOINT_EXTENSIONS,
    "ttsvar_features": _CHECKPOINT_EXTENSIONS,
}


def _register_model_folders(folder_paths):
    """Add our folders to ComfyUI's registry, keeping paths users configured.

    extra_model_paths.yaml is applied before custom nodes load, so a folder may
    already have entries; ours is appended and the extension filter is ours,
    because an empty set there would list every file (readme and placeholder
    files included).
    """
    for name, extensions in MODEL_FOLDERS.items():
        default_dir = os.path.join(folder_paths.models_dir, name)
        try:
            os.makedirs(default_dir, exist_ok=True)
        except OSError:
            pass  # a read-only models dir still works for paths set in extra_model_paths.yaml
        paths, _ = folder_paths.folder_names_and_paths.get(name, ([], set()))
        paths = list(paths)
        if default_dir not in paths:
            paths.append(default_dir)
        folder_paths.folder_names_and_paths[name] = (paths, set(extensions))


try:
    import folder_paths as _comfy_folder_paths
except ImportError:
    _comfy_folder_paths = None  # imported outside ComfyUI (tooling, tests): nothing to register

if _comfy_folder_paths is not None:
    _register_model_folders(_comfy_folder_paths)
    # the shipped ShapesWorld model, listed in the loaders so a first image needs no download
    shipped.register(_comfy_folder_paths)

__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
