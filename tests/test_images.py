import io

import numpy as np
import pytest
import torch
from PIL import Image

from ciidefence import ImageError, load_image, save_image
from ciidefence.images import find_images


@pytest.fixture(scope="module")
def rgb_array(sample_paths):
    return np.asarray(Image.open(sample_paths[0]).convert("RGB"))


@pytest.mark.parametrize("suffix,options", [
    (".png", {}), (".webp", {"lossless": True}), (".bmp", {}), (".tiff", {}),
])
def test_lossless_formats_round_trip(tmp_path, rgb_array, suffix, options):
    path = tmp_path / f"image{suffix}"
    Image.fromarray(rgb_array).save(path, **options)
    image = load_image(path)
    assert image.shape == (3, *rgb_array.shape[:2]) and image.dtype == torch.float32
    assert torch.equal(image, torch.from_numpy(rgb_array.copy()).permute(2, 0, 1).float() / 255)


def test_jpeg_is_read(sample_paths):
    image = load_image(sample_paths[0])
    assert image.ndim == 3 and image.shape[0] == 3
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "1"])
def test_other_modes_become_rgb(tmp_path, rgb_array, mode):
    path = tmp_path / ("image.tiff" if mode == "CMYK" else "image.png")
    Image.fromarray(rgb_array).convert(mode).save(path)
    image = load_image(path)
    assert image.shape == (3, *rgb_array.shape[:2])
    if mode in ("L", "1"):
        assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_transparent_pixels_are_composited_on_white(tmp_path):
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[:8] = (255, 0, 0, 255)  # opaque red top half, fully transparent black bottom half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert torch.equal(image[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(image[:, -1, -1], torch.tensor([1.0, 1.0, 1.0]))


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    gray = np.full((16, 16), 32768, dtype=np.uint16)
    Image.fromarray(gray).save(tmp_path / "g16.png")
    image = load_image(tmp_path / "g16.png")
    assert image.shape == (3, 16, 16)
    assert torch.allclose(image, torch.full_like(image, 32768 / 65535))


def test_exif_orientation_is_applied(tmp_path, rgb_array):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(rgb_array).save(tmp_path / "rotated.jpg", exif=exif)
    image = load_image(tmp_path / "rotated.jpg")
    height, width = rgb_array.shape[:2]
    assert image.shape == (3, width, height)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.jpg")


def test_empty_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(tmp_path / "empty.jpg")


def test_not_an_image(tmp_path):
    (tmp_path / "notes.jpg").write_text("this is text, not a JPEG\n" * 10)
    with pytest.raises(ImageError, match="not an image"):
        load_image(tmp_path / "notes.jpg")


def test_truncated_jpeg(tmp_path, sample_paths):
    data = sample_paths[0].read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(tmp_path / "cut.jpg")


def test_corrupt_jpeg(tmp_path, sample_paths):
    data = bytearray(sample_paths[0].read_bytes())
    data[200:4000] = bytes(3800)
    (tmp_path / "bad.jpg").write_bytes(bytes(data))
    with pytest.raises(ImageError):
        load_image(tmp_path / "bad.jpg")


def test_tiny_image(tmp_path):
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    with pytest.raises(ImageError, match="too small"):
        load_image(tmp_path / "dot.png")


def test_pixel_limit_is_checked_from_the_header(tmp_path):
    # 11000 x 11000 of one colour: 121 megapixels in a file of about 100 kB.
    huge = tmp_path / "huge.png"
    buffer = io.BytesIO()
    Image.new("L", (11000, 11000)).save(buffer, format="PNG", optimize=False)
    huge.write_bytes(buffer.getvalue())
    with pytest.raises(ImageError, match="more than the limit"):
        load_image(huge, max_pixels=50_000_000)


def test_save_then_load_is_exact_for_8_bit_values(tmp_path):
    image = torch.randint(0, 256, (3, 20, 30)).float() / 255
    save_image(image, tmp_path / "x.png")
    assert torch.equal(load_image(tmp_path / "x.png"), image)


def test_find_images_expands_folders(tmp_path, sample_paths):
    for path in sample_paths[:2]:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "labels.csv").write_text("file,class_index\n")
    assert [p.name for p in find_images([tmp_path])] == sorted(p.name for p in sample_paths[:2])
