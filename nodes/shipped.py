"""The shipped ShapesWorld model (ttsvar_core/assets/shapesworld) as entries of the pack's model folders, so
the ordinary loader nodes offer a working model, reward and feature extractor before anything is downloaded.

The assets folder is one more search path of each of these model folders (registered by the pack's
__init__.py, files stay where they are); the entries read "shapesworld/...". ComfyUI would list every file of
that folder under each model folder, so the loaders keep, of what lies there, only the folder's own entry.
"""
from __future__ import annotations

from ..ttsvar_core.shapesworld.demo import ASSETS, CLIP_DIR, MODEL_FILE, T5_DIR, VAE_FILE

SHIPPED_DIR = str(ASSETS.parent)
_PREFIX = ASSETS.name
# model folder -> the shipped entry it lists (the small CLIP is both the reward and the feature extractor)
ENTRIES = {
    "infinity": f"{_PREFIX}/{MODEL_FILE}",
    "infinity_vae": f"{_PREFIX}/{VAE_FILE}",
    "text_encoders": f"{_PREFIX}/{T5_DIR}",
    "ttsvar_rewards": f"{_PREFIX}/{CLIP_DIR}",
    "ttsvar_features": f"{_PREFIX}/{CLIP_DIR}",
}


def register(folder_paths) -> None:
    """Adds the assets folder as the last search path of each model folder with a shipped entry, so a
    user's own file of the same name wins."""
    for name in ENTRIES:
        paths, extensions = folder_paths.folder_names_and_paths[name]
        if SHIPPED_DIR not in paths:
            folder_paths.folder_names_and_paths[name] = (list(paths) + [SHIPPED_DIR], extensions)
