"""Image batches and preprocessing: the package's PIL steps must equal the torchvision
transforms the original scorers use, bit for bit."""

import numpy as np
import pytest
import torch
from PIL import Image

from scorer_testlib import (random_images, stack, to_pils, torchvision_clip_transform, torchvision_fixed_transform,
                            torchvision_hps_transform)
from ttsvar_core.scorers import ImageBatchError
from ttsvar_core.scorers.images import (CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, ImageBatch, center_crop,
                                        resize_exact, resize_longer_side_and_pad, resize_shorter_side,
                                        to_normalized_tensor)

SIZES = [(224, 224), (260, 300), (301, 199), (97, 403), (224, 180)]


@pytest.fixture(scope="module")
def torchvision():
    return pytest.importorskip("torchvision")


@pytest.mark.parametrize("height,width", SIZES)
def test_imagereward_preprocessing_equals_torchvision(torchvision, height, width):
    pils = to_pils(random_images(2, height, width, seed=height))
    ours = to_normalized_tensor(
        [center_crop(resize_shorter_side(im, 224, Image.BICUBIC), 224, 224, round_offsets=True) for im in pils],
        CLIP_MEAN, CLIP_STD)
    assert torch.equal(ours, stack(torchvision_clip_transform(224), pils))


# (224, 180) is left out: the original does not pad an image whose longer side is already 224
# (and then fails on it); that case is covered by the test below.
@pytest.mark.parametrize("height,width", [s for s in SIZES if s != (224, 180)])
def test_hps_preprocessing_equals_torchvision(torchvision, height, width):
    pils = to_pils(random_images(2, height, width, seed=width))
    ours = to_normalized_tensor([resize_longer_side_and_pad(im, 224) for im in pils], CLIP_MEAN, CLIP_STD)
    assert torch.equal(ours, stack(torchvision_hps_transform(224), pils))


def test_hps_pads_images_whose_longer_side_already_fits():
    im = resize_longer_side_and_pad(Image.new("RGB", (224, 180), (255, 255, 255)), 224)
    assert im.size == (224, 224)
    assert im.getpixel((0, 0)) == (0, 0, 0) and im.getpixel((112, 112)) == (255, 255, 255)


@pytest.mark.parametrize("size", [224, 299])
@pytest.mark.parametrize("height,width", SIZES)
def test_feature_preprocessing_equals_torchvision(torchvision, height, width, size):
    pils = to_pils(random_images(2, height, width, seed=size))
    ours = to_normalized_tensor([resize_exact(im, size, size, Image.BILINEAR) for im in pils], IMAGENET_MEAN, IMAGENET_STD)
    assert torch.equal(ours, stack(torchvision_fixed_transform(size), pils))


def test_tensor_rows_become_the_same_pil_images():
    images = random_images(5, 20, 30, seed=1)
    chunks = list(ImageBatch(images).chunks(2))
    assert [len(c) for c in chunks] == [2, 2, 1]
    assert all(im.size == (30, 20) and im.mode == "RGB" for c in chunks for im in c)
    assert torch.equal(torch.stack([torch.from_numpy(np.array(im)) for c in chunks for im in c]), images)


def test_pil_images_are_converted_to_rgb():
    batch = ImageBatch([Image.new("RGBA", (8, 8)), Image.new("L", (8, 8))])
    assert [im.mode for im in next(batch.chunks(4))] == ["RGB", "RGB"]


def test_mixed_sizes_are_rejected():
    with pytest.raises(ImageBatchError, match="same size.*16x16, 32x16"):
        ImageBatch([Image.new("RGB", (16, 16)), Image.new("RGB", (32, 16))])


@pytest.mark.parametrize("bad,match", [
    (torch.zeros(2, 8, 8, 3), "torch.uint8"),
    (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), r"\[B, H, W, 3\]"),
    (torch.zeros(8, 8, 3, dtype=torch.uint8), r"\[B, H, W, 3\]"),
])
def test_bad_tensors_are_rejected(bad, match):
    with pytest.raises(ImageBatchError, match=match):
        ImageBatch(bad)


def test_single_pil_and_non_images_are_rejected():
    with pytest.raises(ImageBatchError, match="wrap it in a list"):
        ImageBatch(Image.new("RGB", (8, 8)))
    with pytest.raises(ImageBatchError, match=r"images\[1\]"):
        ImageBatch([Image.new("RGB", (8, 8)), "cat.png"])
