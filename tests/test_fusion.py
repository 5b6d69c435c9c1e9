import torch

from ciidefence.fusion import fuse


def test_fusion_takes_each_pixel_from_exactly_one_branch():
    torch.manual_seed(0)
    inpainted, denoised = torch.rand(2, 3, 10, 12), torch.rand(2, 3, 10, 12)
    masks = torch.rand(2, 10, 12) > 0.7
    fused = fuse(inpainted, denoised, masks)
    inside = masks[:, None].expand_as(fused)
    assert torch.equal(fused[inside], inpainted[inside])
    assert torch.equal(fused[~inside], denoised[~inside])
