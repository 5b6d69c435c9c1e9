import torch

from ciidefence.regions import boxes_to_mask, peaks_to_boxes, select_peaks


def bumps(height, width, centres, sigma=3.0):
    ys, xs = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
    return sum(h * torch.exp(-((ys - y) ** 2 + (xs - x) ** 2) / (2 * sigma**2)) for y, x, h in centres)


def test_peaks_are_local_maxima_highest_first():
    maps = bumps(64, 64, [(10, 10, 1.0), (40, 50, 0.8), (50, 12, 0.6)])[None, None]
    peaks, valid = select_peaks(maps, num_peaks=3, min_distance=5)
    assert valid.all()
    assert peaks[0, 0].tolist() == [[10, 10], [40, 50], [50, 12]]


def test_suppression_keeps_peaks_apart():
    # two nearby maxima: the lower one is within min_distance and must be skipped
    maps = bumps(64, 64, [(20, 20, 1.0), (20, 26, 0.9), (45, 45, 0.5)], sigma=1.5)[None, None]
    peaks, valid = select_peaks(maps, num_peaks=2, min_distance=9)
    assert peaks[0, 0].tolist() == [[20, 20], [45, 45]]
    torch.manual_seed(0)
    noisy = torch.rand(2, 3, 50, 50)
    peaks, valid = select_peaks(noisy, num_peaks=6, min_distance=7)
    for b in range(2):
        for m in range(3):
            points = peaks[b, m][valid[b, m]]
            for i in range(len(points)):
                for j in range(i):
                    assert (points[i] - points[j]).abs().max() >= 7


def test_too_few_peaks_are_marked_invalid():
    maps = bumps(32, 32, [(16, 16, 1.0)], sigma=4)[None, None]
    peaks, valid = select_peaks(maps, num_peaks=3, min_distance=3)
    assert valid[0, 0].tolist() == [True, False, False]
    empty = torch.zeros(1, 1, 32, 32)
    assert not select_peaks(empty, 2, 3)[1].any()


def test_peak_on_the_border_is_found():
    maps = bumps(32, 32, [(0, 31, 1.0)])[None, None]
    peaks, valid = select_peaks(maps, 1, 3)
    assert peaks[0, 0, 0].tolist() == [0, 31] and valid.all()


def test_box_at_the_border_is_clipped():
    boxes = peaks_to_boxes(torch.tensor([[[0, 31]]]), half_width=2)
    mask = boxes_to_mask(boxes, torch.ones(1, 1, dtype=torch.bool), 32, 32)
    assert mask.sum() == 3 * 3  # rows 0-2, columns 29-31
    assert mask[0, :3, 29:].all()


def test_mask_is_the_union_of_boxes():
    peaks = torch.tensor([[[5, 5], [20, 20], [6, 6]]])
    valid = torch.tensor([[True, True, False]])
    mask = boxes_to_mask(peaks_to_boxes(peaks, half_width=1), valid, 30, 30)
    expected = torch.zeros(1, 30, 30, dtype=torch.bool)
    expected[0, 4:7, 4:7] = True
    expected[0, 19:22, 19:22] = True
    assert torch.equal(mask, expected)


def test_boxes_map_back_through_the_view_geometry():
    # input pixels are half the size of image pixels, with a crop offset of 10 columns
    boxes = peaks_to_boxes(torch.tensor([[[4, 4]]]), half_width=1, scale=0.5, top=0, left=10)
    assert boxes[0, 0].tolist() == [6.0, 26.0, 12.0, 32.0]


def test_the_shifted_max_filter_equals_max_pooling():
    import torch.nn.functional as F

    from ciidefence.regions.selection import _max_filter3

    maps = torch.randn(2, 3, 17, 23)
    assert torch.equal(_max_filter3(maps), F.max_pool2d(maps, 3, stride=1, padding=1))
