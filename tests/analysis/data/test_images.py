"""Decoding one image: EXIF orientation, CMYK, palette, 16-bit and alpha converted, the three
resize policies against hand-made expectations and torchvision, JPEG draft mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from analysis.data import BadImageError, decode_pixels, fit_image
from analysis.data.resize import draft_request

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def _halves(width: int, height: int, left: tuple, right: tuple) -> Image.Image:
    im = Image.new("RGB", (width, height), right)
    im.paste(left, (0, 0, width // 2, height))
    return im


def test_exif_orientation_is_applied(tmp_path):
    # stored 40x20, red left / blue right; orientation 6 means "rotate 90 degrees clockwise to
    # display": the stored left edge becomes the top, so upright it is 20x40, red over blue
    exif = Image.Exif()
    exif[0x0112] = 6
    _halves(40, 20, RED, BLUE).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    x = decode_pixels(tmp_path / "r.jpg", 8, resize="squash").astype(int)
    top, bottom = x[:, :3].mean((1, 2)), x[:, 5:].mean((1, 2))
    assert top[0] > 200 and top[2] < 60, top          # red on top
    assert bottom[2] > 200 and bottom[0] < 60, bottom  # blue below


def test_cmyk_palette_sixteen_bit_and_alpha_are_converted(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)  # red
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([255, 255, 255, 0, 255, 0] + [0] * 762)
    pal.paste(1, (4, 0, 8, 8))                               # right half: green, opaque
    pal.save(tmp_path / "pal.png", transparency=0)           # left half: white, transparent
    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(tmp_path / "deep.png")
    Image.new("RGBA", (8, 8), (200, 100, 50, 128)).save(tmp_path / "rgba.png")

    cmyk = decode_pixels(tmp_path / "cmyk.jpg", 8).astype(int).mean((1, 2))
    assert cmyk[0] > 230 and cmyk[1] < 30 and cmyk[2] < 30, cmyk
    pal_x = decode_pixels(tmp_path / "pal.png", 8, resize="squash")
    assert (pal_x[:, :, :3] == 0).all()                       # transparent over black
    assert (pal_x[:, :, 5:].transpose(1, 2, 0) == GREEN).all()
    deep = decode_pixels(tmp_path / "deep.png", 8)
    assert (deep == round(40000 * 255 / 65535)).all()        # scaled to 8 bits, not clipped to 255
    assert decode_pixels(tmp_path / "deep.png", 8, gray=True).shape == (1, 8, 8)
    rgba = decode_pixels(tmp_path / "rgba.png", 8).astype(int)
    expected = np.array([200, 100, 50]) * 128 / 255            # composited over black
    assert np.abs(rgba.mean((1, 2)) - expected).max() <= 1


def test_a_corrupt_file_is_a_bad_image_naming_it(tmp_path):
    _halves(16, 16, RED, BLUE).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) // 3])
    with pytest.raises(BadImageError, match=r"cannot decode image .*cut\.jpg"):
        decode_pixels(tmp_path / "cut.jpg", 8)


def _gradient(width: int, height: int) -> Image.Image:
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 // (width - 1), yy * 255 // (height - 1), (xx + yy) % 256], -1)
    return Image.fromarray(rgb.astype(np.uint8))


def test_shorter_crop_is_resize_then_centre_crop_as_torchvision():
    import torchvision.transforms.functional as TF

    im = _gradient(120, 80)
    ours = np.asarray(fit_image(im, 32, "shorter-crop"), dtype=float)
    ref = TF.center_crop(TF.resize(im, 32, interpolation=TF.InterpolationMode.BILINEAR), 32)
    assert ours.shape == (32, 32, 3)
    assert np.abs(ours - np.asarray(ref, dtype=float)).mean() < 2.0  # sub-pixel rounding only


def test_squash_is_what_image_folders_did_before_and_pad_letterboxes():
    im = _gradient(40, 20)
    squash = np.asarray(fit_image(im, 16, "squash"))
    assert np.array_equal(squash, np.asarray(im.resize((16, 16), Image.Resampling.BILINEAR)))
    pad = np.asarray(fit_image(im, 16, "pad"))
    assert (pad[:4] == 0).all() and (pad[12:] == 0).all()    # 16x8 in the middle, black above/below
    inner = np.asarray(im.resize((16, 8), Image.Resampling.BILINEAR))
    assert np.array_equal(pad[4:12], inner)


def test_unknown_policy_names_the_choices():
    with pytest.raises(ValueError, match="unknown resize policy 'crop'.*shorter-crop, squash, pad"):
        fit_image(_gradient(8, 8), 4, "crop")


def test_jpeg_draft_only_when_the_target_is_at_most_half_the_source(tmp_path):
    _gradient(500, 375).save(tmp_path / "p.jpg", quality=90)
    sizes = {}
    for target in (224, 64):
        with Image.open(tmp_path / "p.jpg") as im:
            im.draft(None, draft_request(500, 375, target, "shorter-crop"))
            sizes[target] = im.size
    assert sizes == {224: (500, 375), 64: (125, 94)}         # full scale; 1/4 scale
    drafted = decode_pixels(tmp_path / "p.jpg", 64).astype(float)
    full = np.asarray(fit_image(Image.open(tmp_path / "p.jpg").convert("RGB"), 64,
                                "shorter-crop"), dtype=float).transpose(2, 0, 1)
    assert np.abs(drafted - full).mean() < 3.0                # the same picture


def test_decoded_image_is_a_tensor_of_the_colour_mode(tmp_path):
    from analysis.data import decode_image

    _halves(10, 6, RED, BLUE).save(tmp_path / "a.png")
    for gray, channels in ((False, 3), (True, 1)):
        x = decode_image(tmp_path / "a.png", 4, gray=gray)
        assert x.dtype == torch.uint8 and x.shape == (channels, 4, 4)
