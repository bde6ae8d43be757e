"""qhd_lib.plotting: the pieces with logic of their own (figures themselves are checked by eye)."""

from __future__ import annotations

import numpy as np
import pytest

from qhd_lib.plotting import sample_mosaic


def test_mosaic_tiles_samples_row_by_row_inside_grey_frames() -> None:
    images = np.arange(9, dtype=np.uint8)[:, None, None] * np.ones((9, 2, 3), np.uint8)
    mosaic = sample_mosaic(images, side=3)
    assert mosaic.shape == (3 * 4, 3 * 5)
    assert mosaic[0].tolist() == [128] * 15  # the top frame
    assert mosaic[1, 1] == 0 and mosaic[1, 6] == 1 and mosaic[5, 1] == 3  # row-major order
    assert mosaic[1, 4] == 128  # the frame between two samples


def test_mosaic_with_too_few_samples_says_how_many_it_needs() -> None:
    with pytest.raises(ValueError, match="needs 36 samples, got 8"):
        sample_mosaic(np.zeros((8, 28, 28), np.uint8))
