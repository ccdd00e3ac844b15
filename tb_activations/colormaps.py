"""Colormaps as 256-entry palettes, taken from matplotlib (and seaborn).

A palette maps the uint8 "level" images made by :mod:`tb_activations.render`
to RGB: indices ``0..LEVELS-1`` are the colormap from low to high,
``NAN_INDEX`` marks NaN/Inf values and ``BACKGROUND_INDEX`` the separators
and the blank cells past the last channel. The same palette is written into
palette PNGs, so a mosaic is stored as one byte per pixel.
"""

from __future__ import annotations

import functools

import numpy as np

#: Number of colour levels of the colormap proper.
LEVELS = 254
#: Palette index of non-finite values.
NAN_INDEX = 254
#: Palette index of separators and blank cells.
BACKGROUND_INDEX = 255

NAN_COLOR = (255, 0, 255)
BACKGROUND_COLOR = (255, 255, 255)

#: Colormaps registered by seaborn on import (seaborn's heatmap default is "rocket").
SEABORN_COLORMAPS = ("rocket", "mako", "flare", "crest", "vlag", "icefire")


@functools.lru_cache(maxsize=32)
def palette(name: str = "viridis") -> np.ndarray:
    """uint8 ``(256, 3)`` palette of colormap ``name``.

    Args:
        name: Any matplotlib colormap name (``"viridis"``, ``"magma"``,
            ``"gray"``, ``"inferno"``, ...), or a seaborn one (``"rocket"``,
            seaborn's heatmap default, needs ``pip install seaborn``).

    Raises:
        ValueError: for an unknown name (the message lists some valid ones).
    """
    cmap = _lookup(name)
    lut = cmap(np.linspace(0.0, 1.0, LEVELS))[:, :3]
    pal = np.empty((256, 3), np.uint8)
    pal[:LEVELS] = np.clip(np.rint(lut * 255.0), 0, 255).astype(np.uint8)
    pal[NAN_INDEX] = NAN_COLOR
    pal[BACKGROUND_INDEX] = BACKGROUND_COLOR
    pal.setflags(write=False)
    return pal


def _lookup(name: str):
    import matplotlib

    if not isinstance(name, str):
        raise ValueError(
            f"Invalid value for argument `colormap`. Expected a colormap name. Received: {name!r}"
        )
    try:
        return matplotlib.colormaps[name]
    except KeyError:
        pass
    if name in SEABORN_COLORMAPS or name.removesuffix("_r") in SEABORN_COLORMAPS:
        try:
            import seaborn  # noqa: F401  (registers its colormaps with matplotlib)
        except ImportError:
            raise ValueError(
                f"Colormap {name!r} is seaborn's; install it with `pip install seaborn` "
                "(or `pip install tb_activations[seaborn]`), or use 'magma', which looks close."
            ) from None
        return matplotlib.colormaps[name]
    raise ValueError(
        f"Invalid value for argument `colormap`: {name!r} is not a known colormap. "
        "Valid names include 'viridis', 'magma', 'inferno', 'plasma', 'cividis', 'gray', "
        "'hot', 'jet', 'turbo' and seaborn's 'rocket' (with seaborn installed)."
    )
