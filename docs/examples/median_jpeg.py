"""A defence written outside ciidefence: a 3 x 3 median filter, then JPEG; and a variant with a random quality."""

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def median3(images):
    patches = F.pad(images, (1, 1, 1, 1), mode="reflect").unfold(2, 3, 1).unfold(3, 3, 1)
    return patches.reshape(*images.shape, 9).median(-1).values


def jpeg(images, qualities):
    out = []
    for image, quality in zip(images, qualities):
        buffer = io.BytesIO()
        Image.fromarray((image * 255).round().byte().permute(1, 2, 0).numpy()).save(buffer, "JPEG", quality=quality)
        out.append(torch.from_numpy(np.array(Image.open(buffer))).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


class MedianJpeg(torch.nn.Module):
    def __init__(self, quality=75):
        super().__init__()
        self.quality, self.params = quality, {"window": 3, "quality": quality}

    def forward(self, images):
        return jpeg(median3(images), [self.quality] * len(images))

    def differentiable_approximation(self, images):
        return median3(images)  # for BPDA: the median as it is, JPEG as the identity


class RandomMedianJpeg(torch.nn.Module):
    randomised = True
    params = {"window": 3, "quality": "uniform 50..95"}

    def forward(self, images, generator=None):
        qualities = torch.randint(50, 96, (len(images),), generator=generator).tolist()
        return jpeg(median3(images), qualities)

    def differentiable_approximation(self, images, generator=None):
        return median3(images)


def make_defence(classifier):
    return MedianJpeg(quality=75)


def make_random_defence(classifier):
    return RandomMedianJpeg()
