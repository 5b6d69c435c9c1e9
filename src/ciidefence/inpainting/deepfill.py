"""A DeepFill-style generative inpainter: a coarse fill refined by a network with contextual attention.

The design follows Yu et al. (CVPR 2018, "DeepFill v1"), written here from the
paper. A coarse stage fills the hole; a refinement network with two parallel
branches improves it:

- a dilated branch (an encoder to 1/4 resolution, then convolutions with
  dilation 2, 4, 8 and 16 for a wide receptive field);
- a contextual-attention branch: an encoder to 1/4 resolution whose features
  inside the hole are rebuilt from 3 x 3 background feature patches, matched
  by cosine similarity, weighted by a softmax over the matches (with
  attention propagation: neighbouring matches reinforce each other) and
  pasted back with a transposed convolution.

The branches are concatenated and decoded to a correction of the coarse fill
(the last layer starts at zero, so training starts from the coarse fill).

The coarse stage is either the paper's learned encoder-decoder with dilated
convolutions (``coarse="network"``) or the torch-native harmonic fill
(``coarse="harmonic"``), which has no parameters and keeps the whole model
differentiable; docs/JOURNAL.md has the measurement that chose between them.

The network works on windows around each hole (a hole and a margin as wide as
the hole), so its cost follows the holes, not the image.

References
----------
J. Yu, Z. Lin, J. Yang, X. Shen, X. Lu and T. S. Huang, "Generative Image
Inpainting with Contextual Attention", CVPR 2018.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError
from . import check_precision
from .harmonic import harmonic_fill

COARSE_STAGES = ("harmonic", "network")
SHIPPED_MODEL = "deepfill.safetensors"


@dataclass(frozen=True)
class DeepFillConfig:
    """The inpainter's architecture.

    Attributes
    ----------
    width : int
        Channels of the first layer; deeper layers have 2x and 4x.
    coarse : str
        ``"harmonic"`` (parameter-free, differentiable) or ``"network"`` (the paper's learned coarse stage).
    patch : int
        Side of the background patches matched by contextual attention.
    softmax_scale : float
        Sharpness of the softmax over matches (10 in the paper).
    propagation : int
        Side of the attention-propagation kernel (3 in the paper); 1 turns it off.
    """

    width: int = 24
    coarse: str = "harmonic"
    patch: int = 3
    softmax_scale: float = 10.0
    propagation: int = 3

    def __post_init__(self) -> None:
        if self.coarse not in COARSE_STAGES:
            raise ConfigError(f"unknown coarse stage {self.coarse!r}; choose one of: {', '.join(COARSE_STAGES)}")
        if self.width < 4 or self.patch < 1 or self.patch % 2 == 0 or self.propagation < 1:
            raise ConfigError("DeepFill needs width >= 4 and odd patch and propagation sizes")


def _conv(channels_in: int, channels_out: int, kernel: int = 3, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, kernel, stride, padding, dilation), nn.ELU())


def _encoder(channels_in: int, width: int) -> nn.Sequential:
    """Full resolution to 1/4, ``4 * width`` channels."""
    return nn.Sequential(
        _conv(channels_in, width, 5), _conv(width, 2 * width, 3, 2), _conv(2 * width, 2 * width),
        _conv(2 * width, 4 * width, 3, 2), _conv(4 * width, 4 * width),
    )


def _dilated(width: int) -> nn.Sequential:
    return nn.Sequential(*(_conv(4 * width, 4 * width, 3, 1, rate) for rate in (2, 4, 8, 16)))


def _decoder(channels_in: int, width: int) -> nn.Sequential:
    """1/4 resolution to full, ending in a 3-channel layer that starts at zero."""
    last = nn.Conv2d(width // 2, 3, 3, 1, 1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)  # type: ignore[arg-type]  # Conv2d has a bias here
    return nn.Sequential(
        _conv(channels_in, 4 * width), _conv(4 * width, 4 * width),
        nn.Upsample(scale_factor=2, mode="nearest"), _conv(4 * width, 2 * width), _conv(2 * width, 2 * width),
        nn.Upsample(scale_factor=2, mode="nearest"), _conv(2 * width, width), _conv(width, width // 2), last,
    )


def contextual_attention(
    features: torch.Tensor, hole: torch.Tensor, patch: int = 3, softmax_scale: float = 10.0, propagation: int = 3
) -> torch.Tensor:
    """Rebuild the features inside a hole from background patches.

    For each image, every ``patch x patch`` feature patch lying wholly outside
    the hole is a candidate. Each location is compared with every candidate
    by cosine similarity (a convolution with the normalised patches); the
    scores are smoothed along the diagonal (attention propagation: a match at
    a neighbour that is shifted the same way reinforces this one), turned into
    weights by a softmax, and the raw patches are pasted back with those
    weights by a transposed convolution.

    Parameters
    ----------
    features : torch.Tensor
        ``(B, C, h, w)``.
    hole : torch.Tensor
        ``(B, 1, h, w)`` in [0, 1], 1 where features are missing.
    patch, softmax_scale, propagation
        See :class:`DeepFillConfig`.

    Returns
    -------
    torch.Tensor
        ``(B, C, h, w)``: the attention's reconstruction inside the hole, the
        input features outside. Differentiable in ``features``.
    """
    batch, channels, height, width = features.shape
    pad = patch // 2
    outputs = []
    for index in range(batch):
        image = features[index : index + 1]
        patches = F.unfold(image, patch, padding=pad).transpose(1, 2).reshape(height * width, channels, patch, patch)
        norms = patches.flatten(1).norm(p=2, dim=1).clamp(min=1e-4)
        scores = F.conv2d(image, patches / norms[:, None, None, None], padding=pad)  # (1, hw, h, w)
        if propagation > 1:
            scores = _propagate(scores, height, width, propagation)
        background = F.max_pool2d(hole[index : index + 1], patch, 1, pad).flatten() == 0
        if not bool(background.any()):
            outputs.append(image)
            continue
        scores = scores.masked_fill(~background[None, :, None, None], -math.inf)
        attention = torch.softmax(scores * softmax_scale, dim=1)
        outputs.append(F.conv_transpose2d(attention, patches, padding=pad) / (patch * patch))
    rebuilt = torch.cat(outputs)
    return hole * rebuilt + (1 - hole) * features


def _propagate(scores: torch.Tensor, height: int, width: int, size: int) -> torch.Tensor:
    """Smooth a ``(1, hw, h, w)`` score volume with an identity kernel, along rows and then columns."""
    kernel = torch.eye(size, dtype=scores.dtype, device=scores.device)[None, None]
    pad = size // 2
    # rows of (foreground, background) locations in raster order
    flat = F.conv2d(scores.reshape(1, 1, height * width, height * width), kernel, padding=pad)
    # the same with both axes transposed (column-major order), then back
    flat = flat.reshape(1, height, width, height, width).permute(0, 2, 1, 4, 3).reshape(1, 1, height * width, -1)
    flat = F.conv2d(flat, kernel, padding=pad)
    flat = flat.reshape(1, width, height, width, height).permute(0, 2, 1, 4, 3)
    return flat.reshape(1, height * width, height, width)


class DeepFill(nn.Module):
    """The inpainting network: ``model(images, masks) -> images``, equal to ``images`` outside the masks.

    Parameters
    ----------
    config : DeepFillConfig, optional
    """

    __jit_ignored_attributes__ = ["config"]  # TorchScript reads the plain copies below

    def __init__(self, config: DeepFillConfig | None = None) -> None:
        super().__init__()
        self.config = config or DeepFillConfig()
        self.harmonic_coarse = self.config.coarse == "harmonic"
        self.patch, self.softmax_scale, self.propagation = (self.config.patch, self.config.softmax_scale,
                                                            self.config.propagation)
        width = self.config.width
        self.coarse = nn.Sequential() if self.harmonic_coarse else nn.Sequential(
            _encoder(5, width), _dilated(width), _decoder(4 * width, width))
        self.dilated_branch = nn.Sequential(_encoder(4, width), _dilated(width))
        self.attention_encoder = _encoder(4, width)
        self.attention_after = nn.Sequential(_conv(4 * width, 4 * width), _conv(4 * width, 4 * width))
        self.decoder = _decoder(8 * width, width)

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in asdict(self.config).items())

    def coarse_fill(self, images: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """The first fill, ``(B, 3, H, W)`` in [0, 1]."""
        if self.harmonic_coarse:
            return harmonic_fill(images, hole > 0.5)
        inputs = torch.cat([(images * 2 - 1) * (1 - hole), torch.ones_like(hole), hole], dim=1)
        delta = self.coarse(inputs)
        base = images * (1 - hole) + 0.5 * hole
        return (base + delta).clamp(0, 1)

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Inpaint windows whose sides are multiples of 4.

        Parameters
        ----------
        images : torch.Tensor
            ``(B, 3, H, W)`` in [0, 1].
        masks : torch.Tensor
            ``(B, 1, H, W)`` float or bool, 1 (True) where pixels are missing.

        Returns
        -------
        torch.Tensor
            ``(B, 3, H, W)`` in [0, 1].
        """
        hole = masks.to(images.dtype)
        coarse = self.coarse_fill(images, hole)
        inputs = torch.cat([coarse * 2 - 1, hole], dim=1)
        small_hole = F.max_pool2d(hole, 4)
        dilated = self.dilated_branch(inputs)
        attended = contextual_attention(self.attention_encoder(inputs), small_hole, self.patch, self.softmax_scale,
                                        self.propagation)
        merged = torch.cat([dilated, self.attention_after(attended)], dim=1)
        refined = (coarse + self.decoder(merged)).clamp(0, 1)
        return hole * refined + (1 - hole) * images


# --- windows around holes ------------------------------------------------------------------------------


MAX_CONTEXT = 48
"""Largest margin of known pixels a window keeps on each side of its hole: contextual attention costs the
square of the window's area, so a large hole (several boxes run together) gets less than three times its side."""


def window_side(hole_side: int, minimum: int = 32, max_context: int = MAX_CONTEXT) -> int:
    """The side of the square window around a hole of side ``hole_side``, a multiple of 4.

    Three times the hole's side (the context the network is trained with), at
    least ``minimum`` and at most the hole plus ``max_context`` each side.
    """
    side = max(minimum, min(3 * hole_side, hole_side + 2 * max_context))
    return side + -side % 4


Window = tuple[int, int, int, int]
"""``(image, top, left, side)``: a square window around one hole of one image of a batch."""


def _window(index: int, top: int, bottom: int, left: int, right: int, minimum: int) -> Window:
    """The window centred on a hole whose bounding box is rows ``top:bottom``, columns ``left:right``."""
    side = window_side(max(bottom - top, right - left), minimum)
    return (index, (top + bottom - side) // 2, (left + right - side) // 2, side)


def hole_windows(masks: torch.Tensor, minimum: int = 32) -> list[Window]:
    """A square window around each connected (4-connected) hole, with the side :func:`window_side` gives.

    Windows are listed image by image, each image's holes in the raster
    order of their first pixel; they may reach past the image (the caller
    pads). :func:`hole_windows_torch` finds the same windows in torch alone.
    """
    from scipy import ndimage

    windows = []
    for index, mask in enumerate(masks.detach().cpu().numpy()):
        labels, _ = ndimage.label(mask)
        for found in ndimage.find_objects(labels):
            if found is not None:
                rows, cols = found
                windows.append(_window(index, rows.start, rows.stop, cols.start, cols.stop, minimum))
    return windows


def hole_windows_torch(masks: torch.Tensor, minimum: int = 32) -> list[Window]:
    """:func:`hole_windows` without scipy, so that the exported model scripts; the same windows in the same order.

    Each hole pixel takes the smallest raster index among its 4-neighbours
    until nothing changes, so a hole ends up numbered by its first pixel
    (as ``scipy.ndimage.label`` orders them). The work is confined to the
    bounding box of each image's holes, and takes as many passes as the
    longest path inside a hole.
    """
    windows: list[Window] = []
    for index in range(masks.shape[0]):
        mask = masks[index]
        if not bool(mask.any()):
            continue
        rows = mask.any(dim=1).nonzero()[:, 0]
        cols = mask.any(dim=0).nonzero()[:, 0]
        top, left = int(rows[0]), int(cols[0])
        box = mask[top : int(rows[-1]) + 1, left : int(cols[-1]) + 1]
        height, width = box.shape[0], box.shape[1]
        unlabelled = height * width
        labels = torch.where(box, torch.arange(unlabelled, device=box.device).reshape(height, width), unlabelled)
        while True:
            padded = F.pad(labels, [1, 1, 1, 1], value=float(unlabelled))
            neighbours = torch.minimum(torch.minimum(padded[:-2, 1:-1], padded[2:, 1:-1]),
                                       torch.minimum(padded[1:-1, :-2], padded[1:-1, 2:]))
            grown = torch.where(box, torch.minimum(labels, neighbours), unlabelled)
            if torch.equal(grown, labels):
                break
            labels = grown
        found = torch.unique(labels[box])  # sorted: the raster order of each hole's first pixel
        for number in range(found.shape[0]):
            pixels = (labels == found[number]).nonzero()
            windows.append(_window(index, top + int(pixels[:, 0].min()), top + int(pixels[:, 0].max()) + 1,
                                   left + int(pixels[:, 1].min()), left + int(pixels[:, 1].max()) + 1, minimum))
    return windows


WINDOW_PIXELS_PER_CALL = 1 << 20
"""One network call takes windows of at most this many pixels in all (at least one window), so that a
batch's activations stay bounded. At the classifier's view a batch of 32 images fits in one call."""
MAX_NETWORK_SIDE = 192
"""Windows wider than this are filled at this side and enlarged into their hole. Contextual attention's memory
grows with the square of a window's area: the windows of a 4000 x 3000 photograph's holes (several hundred
pixels) took the command's peak from 1.7 GiB (Telea) to 3.6 GiB. At the classifier's view the widest window of
the light and balanced operating points on the first 200 shared images is 72 px, so what is evaluated there
is filled at its own resolution."""


class WindowedDeepFill(nn.Module):
    """The network applied to a window around each hole: ``model(image, mask) -> image``.

    ``forward`` follows the convention of the ``learned`` inpainter slot
    (LaMa's TorchScript exports): ``image`` ``(B, 3, H, W)`` in [0, 1],
    ``mask`` ``(B, 1, H, W)`` float, 1 where pixels are missing. It finds
    the windows in torch alone, so the module scripts (:func:`export_deepfill`).

    Parameters
    ----------
    network : DeepFill
    """

    def __init__(self, network: DeepFill) -> None:
        super().__init__()
        self.network = network
        self.window_pixels_per_call: int = WINDOW_PIXELS_PER_CALL
        self.max_network_side: int = MAX_NETWORK_SIDE

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        holes = mask[:, 0] > 0.5
        return self.fill(image, holes, hole_windows_torch(holes))

    def fill(self, images: torch.Tensor, masks: torch.Tensor, windows: list[Window]) -> torch.Tensor:
        """Inpaint ``images`` (``(B, 3, H, W)``) where ``masks`` (``(B, H, W)`` bool) is True, one network call
        per window side over all the windows of that side; see :func:`inpaint_with_network`.

        A window that reaches past the image sees it extended by replicating its edge (and the mask with it,
        so that a hole at the edge stays a hole); only the window is padded, never the whole image.
        """
        if len(windows) == 0:
            return images
        height, width = images.shape[2], images.shape[3]
        output = images.clone()
        sides: list[int] = []
        for window in windows:
            if window[3] not in sides:
                sides.append(window[3])
        for side in sorted(sides):
            placed: list[Window] = []
            crops: list[torch.Tensor] = []
            holes: list[torch.Tensor] = []
            for window in windows:
                index, top, left, own_side = window
                if own_side == side:
                    placed.append(window)
                    crops.append(_replicated_crop(images[index], top, left, side))
                    holes.append(_replicated_crop(masks[index][None].to(images.dtype), top, left, side))
            network_side = min(side, self.max_network_side)
            per_call = max(1, self.window_pixels_per_call // (network_side * network_side))
            parts: list[torch.Tensor] = []
            for start in range(0, len(crops), per_call):
                crop_batch, hole_batch = torch.stack(crops[start : start + per_call]), torch.stack(
                    holes[start : start + per_call])
                if network_side < side:  # filled at a lower resolution, then enlarged into the hole
                    crop_batch = F.interpolate(crop_batch, size=[network_side, network_side], mode="area")
                    hole_batch = (F.interpolate(hole_batch, size=[network_side, network_side], mode="area") > 0).to(
                        hole_batch.dtype)
                part = self.network(crop_batch.contiguous(memory_format=torch.channels_last),  # oneDNN's fast
                                    hole_batch.contiguous(memory_format=torch.channels_last))  # layout
                if network_side < side:
                    part = F.interpolate(part, size=[side, side], mode="bilinear", align_corners=False).clamp(0, 1)
                parts.append(part)
            filled = torch.cat(parts)
            for number, (index, top, left, _) in enumerate(placed):
                row0, col0 = max(top, 0), max(left, 0)
                row1, col1 = min(top + side, height), min(left + side, width)
                hole = holes[number][:, row0 - top : row1 - top, col0 - left : col1 - left] > 0
                fill = filled[number][:, row0 - top : row1 - top, col0 - left : col1 - left]
                output[index, :, row0:row1, col0:col1] = torch.where(hole, fill,
                                                                     output[index, :, row0:row1, col0:col1])
        return output


def _replicated_crop(image: torch.Tensor, top: int, left: int, side: int) -> torch.Tensor:
    """The ``side`` x ``side`` square of ``image`` (``(C, H, W)``) at ``top``, ``left``, the image extended by
    replicating its edge where the square reaches past it."""
    height, width = image.shape[1], image.shape[2]
    row0, col0 = min(max(top, 0), height - 1), min(max(left, 0), width - 1)
    row1, col1 = max(min(top + side, height), row0 + 1), max(min(left + side, width), col0 + 1)
    crop = image[:, row0:row1, col0:col1]
    pads = [col0 - left, left + side - col1, row0 - top, top + side - row1]
    if max(pads) > 0:
        crop = F.pad(crop[None], pads, mode="replicate")[0]
    return crop


def inpaint_with_network(images: torch.Tensor, masks: torch.Tensor, model: DeepFill) -> torch.Tensor:
    """Inpaint each hole with ``model`` on a window around it, batched over the windows of each size.

    A hole's fill depends on its own image only, not on the other images in
    the batch. Where windows overlap, the larger window's fill of a shared
    hole is kept; between windows of one size, the later one's.

    Parameters
    ----------
    images : torch.Tensor
        ``(B, 3, H, W)`` in [0, 1].
    masks : torch.Tensor
        ``(B, H, W)`` bool.
    model : DeepFill

    Returns
    -------
    torch.Tensor
        ``(B, 3, H, W)``, equal to ``images`` outside the masks; differentiable in ``images``.
    """
    return WindowedDeepFill(model).fill(images, masks, hole_windows(masks))


def export_deepfill(out: str | os.PathLike, path: str | os.PathLike | None = None) -> None:
    """Write the inpainter in ``path`` (default: the shipped one) as TorchScript for ``--inpainter learned``.

    The exported model fills as ``--inpainter deepfill`` does (to float
    rounding) on images whose sides are multiples of 8; on other sizes the ``learned``
    slot reflect-pads the image and the mask, and a hole at the bottom or
    right edge then meets its mirror image, which changes its window.
    """
    import warnings

    with warnings.catch_warnings():  # TorchScript is the format of the learned slot (LaMa's exports)
        warnings.filterwarnings("ignore", "`torch.jit", FutureWarning)
        scripted = torch.jit.script(WindowedDeepFill(load_deepfill(path)))
    from ..files import write_atomically

    write_atomically(out, lambda handle: torch.jit.save(scripted, handle))


# --- weights ---------------------------------------------------------------------------------------------


def save_deepfill(model: DeepFill, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write the weights and the architecture (in the file's metadata) as safetensors, atomically."""
    from ..files import save_safetensors

    info = {"config": json.dumps(asdict(model.config)), **{k: str(v) for k, v in (metadata or {}).items()}}
    save_safetensors(model.state_dict(), path, info)


def load_deepfill(path: str | os.PathLike | None = None) -> DeepFill:
    """The inpainter in ``path`` (safetensors written by :func:`save_deepfill`), or the shipped one.

    Raises
    ------
    CheckpointError
        If the file is missing, not safetensors, or does not fit the architecture it names.
    """
    from safetensors import safe_open

    if path is None:
        path = Path(str(resources.files("ciidefence.data").joinpath(SHIPPED_MODEL)))
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such inpainter file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not a dict
        model = DeepFill(DeepFillConfig(**json.loads(metadata["config"])))
        model.load_state_dict(state)
    except Exception as error:  # safetensors raises its own types for any malformed file
        raise CheckpointError(f"{path}: not a DeepFill inpainter ({type(error).__name__}: {error})") from None
    if not all(torch.isfinite(value).all() for value in state.values()):
        raise CheckpointError(f"{path}: the weights hold NaN or Inf values")
    return model.eval().requires_grad_(False)


@functools.lru_cache(maxsize=4)
def _cached(path: str | None) -> DeepFill:
    return load_deepfill(path).to(memory_format=torch.channels_last)


def inpaint_deepfill(
    images: torch.Tensor, masks: torch.Tensor, model_path: str | os.PathLike | None = None,
    precision: str = "float32",
) -> torch.Tensor:
    """Inpaint with the DeepFill-style network (the shipped weights unless ``model_path`` names others).

    Parameters
    ----------
    images : torch.Tensor
        ``(B, 3, H, W)`` in [0, 1].
    masks : torch.Tensor
        ``(B, H, W)`` bool, True where pixels are to be filled.
    model_path : path, optional
        Weights written by ``ciid train-inpainter``.
    precision : {"float32", "bfloat16"}
        ``"bfloat16"`` runs the network under :func:`torch.autocast` (its
        convolutions in bfloat16, the rest in float32): about twice as fast
        where the hardware has bfloat16 units, slower where it has none.

    Returns
    -------
    torch.Tensor
        ``(B, 3, H, W)`` in [0, 1], of ``images``' dtype; equal to ``images`` outside the masks.
    """
    check_precision("deepfill", precision)
    model = _cached(str(model_path) if model_path is not None else None).to(images.device)
    if precision == "float32":
        return inpaint_with_network(images, masks, model)
    with torch.autocast(images.device.type, dtype=torch.bfloat16):
        filled = inpaint_with_network(images, masks, model)
    return filled.to(images.dtype)
