"""Class activation maps for the top-k classes, from one forward pass."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError, InputError
from ..models.base import Classifier


@dataclass(frozen=True)
class ClassEvidence:
    """What the classifier sees in a batch: its logits, top classes and their CAMs.

    Attributes
    ----------
    logits : torch.Tensor
        ``(B, num_classes)``.
    classes : torch.Tensor
        ``(B, k)`` long, the top-k class indices, best first.
    probabilities : torch.Tensor
        ``(B, k)`` softmax probabilities of ``classes``.
    cams : torch.Tensor
        ``(B, k, S, S)`` activation maps at the classifier's input size ``S``,
        each scaled to [0, 1] (zero where the class has no positive evidence).
    """

    logits: torch.Tensor
    classes: torch.Tensor
    probabilities: torch.Tensor
    cams: torch.Tensor


def class_activation_maps(classifier: Classifier, images: torch.Tensor, top_k: int) -> ClassEvidence:
    """Rank the classes of ``images`` and compute the CAM of each of the top ``k``.

    The classes and the maps come from one forward pass of the classifier's
    body. With a global-average-pool + linear head the maps are CAMs (Zhou et
    al., CVPR 2016): feature maps weighted by the linear layer's row of each
    class. Otherwise they are Grad-CAMs (Selvaraju et al., ICCV 2017), whose
    gradients need a backward pass through the head only.

    Parameters
    ----------
    classifier : Classifier
        The classifier whose decision is explained.
    images : torch.Tensor
        ``(B, 3, H, W)`` in [0, 1], any size (brought to the classifier's view).
    top_k : int
        Number of top-ranking classes, at least 1.

    Returns
    -------
    ClassEvidence
    """
    if not 1 <= top_k <= 100:
        raise ConfigError(f"top_k must be between 1 and 100, got {top_k}")
    with torch.no_grad():
        features = classifier.features(images)
    if classifier.linear_head is not None:
        with torch.no_grad():
            logits = classifier.head(features)
            classes = logits.topk(top_k, dim=1).indices
            weights = classifier.linear_head.weight[classes]  # (B, k, C)
            maps = torch.einsum("bkc,bchw->bkhw", weights, features)
    else:
        maps, logits, classes = _grad_cam(classifier, features, top_k)
    maps = F.interpolate(
        maps.clamp(min=0),
        size=(classifier.input_size,) * 2,
        mode="bilinear",
        align_corners=False,
    )
    peak = maps.amax(dim=(2, 3), keepdim=True)
    maps = torch.where(peak > 0, maps / peak.clamp(min=torch.finfo(maps.dtype).tiny), 0.0)
    probabilities = logits.softmax(dim=1).gather(1, classes)
    return ClassEvidence(logits, classes, probabilities, maps)


def _grad_cam(
    classifier: Classifier, features: torch.Tensor, top_k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grad-CAM maps ``(B, k, h, w)`` (before ReLU), logits and top-k classes."""
    if torch.is_inference_mode_enabled():
        raise InputError(
            f"{classifier.name} has no linear head, so its class activation maps are Grad-CAMs, which need "
            "gradients: call this outside torch.inference_mode() (torch.no_grad() is fine)"
        )
    with torch.enable_grad():
        leaf = features.detach().requires_grad_(True)
        logits = classifier.head(leaf)
        classes = logits.topk(top_k, dim=1).indices
        maps = []
        for rank in range(top_k):
            score = logits.gather(1, classes[:, rank : rank + 1]).sum()
            (gradient,) = torch.autograd.grad(score, leaf, retain_graph=rank < top_k - 1)
            maps.append((gradient.mean(dim=(2, 3), keepdim=True) * leaf).sum(dim=1))
    return torch.stack(maps, dim=1).detach(), logits.detach(), classes
