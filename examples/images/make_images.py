"""Draws the sample images of examples/images/ (no download, no photo rights).

Run it again to regenerate them: ``python examples/images/make_images.py``.

- ``kingfisher.png``: a drawn kingfisher on a branch (blue back, orange belly,
  long dark beak, red feet), a nod to the article's photograph, 224 x 224.
- ``shapes.png``: a sky gradient, a sun, hills and a house, 224 x 224.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = os.path.dirname(os.path.abspath(__file__))
SIZE = 224


def _gradient(top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    t = np.linspace(0.0, 1.0, SIZE)[:, None, None]
    rgb = (1 - t) * np.array(top) + t * np.array(bottom)
    return Image.fromarray(np.repeat(rgb, SIZE, axis=1).astype(np.uint8))


def kingfisher() -> Image.Image:
    img = _gradient((120, 170, 130), (40, 80, 60))  # blurred green foliage behind
    d = ImageDraw.Draw(img)
    d.line([(10, 170), (214, 150)], fill=(90, 60, 30), width=9)  # branch
    d.ellipse([70, 80, 160, 165], fill=(240, 130, 40))  # orange belly
    d.ellipse([85, 70, 165, 140], fill=(20, 110, 200))  # blue back and wing
    d.polygon([(150, 120), (200, 175), (165, 115)], fill=(20, 90, 180))  # tail
    d.ellipse([55, 45, 110, 100], fill=(25, 120, 210))  # head
    d.ellipse([68, 62, 80, 74], fill=(255, 255, 255))  # eye ring
    d.ellipse([71, 65, 78, 72], fill=(0, 0, 0))  # eye
    d.polygon([(60, 70), (10, 88), (62, 82)], fill=(30, 30, 30))  # beak
    d.ellipse([80, 78, 100, 92], fill=(245, 240, 230))  # white throat patch
    for x in (100, 118):  # feet on the branch
        d.line([(x, 160), (x + 2, 166)], fill=(220, 40, 30), width=5)
    return img.filter(ImageFilter.GaussianBlur(0.8))


def shapes() -> Image.Image:
    img = _gradient((110, 170, 240), (220, 235, 250))
    d = ImageDraw.Draw(img)
    d.ellipse([150, 20, 200, 70], fill=(255, 210, 60))  # sun
    d.ellipse([-60, 130, 140, 300], fill=(70, 150, 70))  # hills
    d.ellipse([90, 140, 300, 300], fill=(50, 120, 55))
    d.rectangle([40, 120, 100, 175], fill=(200, 60, 50))  # house
    d.polygon([(32, 122), (70, 88), (108, 122)], fill=(120, 50, 40))  # roof
    d.rectangle([62, 145, 78, 175], fill=(80, 50, 30))  # door
    return img


if __name__ == "__main__":
    for name, draw in (("kingfisher.png", kingfisher), ("shapes.png", shapes)):
        path = os.path.join(HERE, name)
        draw().save(path, optimize=True)
        print(path, os.path.getsize(path), "bytes")
