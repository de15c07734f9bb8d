"""InceptionV3 pool features, the TTS-VAR paper's alternative clustering features.

The reference builds torchvision's inception_v3 with its ImageNet weights
(inception_v3_google-0cc3c7bd.pth), replaces the classifier with an identity and takes the
2048-d average-pooled features. Those weights expect transform_input=True, which re-maps the
ImageNet-normalised input inside the model. torchvision is imported only here.
"""

from pathlib import Path
from typing import List

import torch
from PIL import Image

from .base import FeatureExtractor, Features
from .checkpoints import check_keys, empty_module, flat_tensors, load_into, read_tensors, require_file, wrong_file
from .errors import FEATURES_DIR, missing_dependency
from .images import IMAGENET_MEAN, IMAGENET_STD, resize_exact, to_normalized_tensor

EXPECTED = "inception_v3_google-0cc3c7bd.pth (torchvision's ImageNet InceptionV3 weights)"
IMAGE_SIZE = 299
_UNUSED_PREFIXES = ("AuxLogits.", "fc.")


def import_inception3():
    try:
        from torchvision.models.inception import Inception3
    except ImportError as exc:
        raise missing_dependency("torchvision", "torchvision", "The InceptionV3 feature extractor") from exc
    return Inception3


def build_model(sd: dict, path: Path) -> torch.nn.Module:
    inception3 = import_inception3()
    model = empty_module(lambda: inception3(num_classes=1000, aux_logits=True, transform_input=True, init_weights=False))
    _reject_fid_weights(sd, path)
    used = [k for k in model.state_dict() if not k.startswith(_UNUSED_PREFIXES) and not k.endswith("num_batches_tracked")]
    optional = [k for k in sd if k.startswith(_UNUSED_PREFIXES) or k.endswith("num_batches_tracked")]
    check_keys(path, sd, used, EXPECTED, FEATURES_DIR, optional=optional)
    # The classifier and auxiliary head are not used for pool features.
    model.AuxLogits = None
    model.aux_logits = False
    model.fc = torch.nn.Identity()
    weights = {k: v for k, v in sd.items() if not k.startswith(_UNUSED_PREFIXES)}
    return load_into(model, weights, path, EXPECTED, FEATURES_DIR)


def _reject_fid_weights(sd: dict, path: Path) -> None:
    fc = sd.get("fc.weight")
    if fc is not None and fc.shape[0] == 1008:
        raise wrong_file(path, sd, EXPECTED, FEATURES_DIR,
                         "It has 1008 classes: these are pytorch-fid's FID Inception weights, a different "
                         "network; TTS-VAR uses torchvision's ImageNet weights.")


class InceptionExtractor(FeatureExtractor):
    """patch_tokens: None; pooled: the 2048-d average-pooled features."""

    name = "inception"

    def __init__(self, path, *, device="cpu", dtype=torch.float32, max_batch=8):
        path = require_file(path, EXPECTED, FEATURES_DIR)
        sd = flat_tensors(read_tensors(path, EXPECTED), path, EXPECTED, FEATURES_DIR)
        super().__init__({"inception": build_model(sd, path)}, device=device, dtype=dtype, max_batch=max_batch)

    def preprocess(self, images: List[Image.Image]) -> torch.Tensor:
        """TTS-VAR: transforms.Resize((299, 299)) on PIL (bilinear), ToTensor, ImageNet normalisation."""
        resized = [resize_exact(im, IMAGE_SIZE, IMAGE_SIZE, Image.BILINEAR) for im in images]
        return to_normalized_tensor(resized, IMAGENET_MEAN, IMAGENET_STD)

    def _extract_chunk(self, images: List[Image.Image]) -> Features:
        pooled = self._modules["inception"](self.preprocess(images).to(self.device, self.dtype))
        return Features(patch_tokens=None, pooled=pooled)
