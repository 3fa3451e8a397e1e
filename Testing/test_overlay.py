"""The preview picture: patient right on the picture's left."""
import numpy as np
import pytest

from conftest import make_phantom
from LungAutoSegLib.preprocess import model_grid


@pytest.mark.parametrize("geometry", ["x_flipped", "oblique"])
def test_the_preview_shows_the_right_lung_on_the_pictures_left_in_axial_and_coronal(geometry):
    from LungAutoSegLib.overlay import overlay_panel

    phantom = make_phantom(4, geometry)
    labels = np.zeros(phantom.ct.array.shape, np.uint8)
    labels[phantom.masks["Lung_R"]], labels[phantom.masks["Lung_L"]] = 1, 2
    picture = overlay_panel(phantom.ct, phantom.ct.with_array(labels), [(255, 0, 0), (0, 0, 255)]).astype(int)
    red = (picture[..., 0] - picture[..., 2]) > 60   # Lung_R tinted red, Lung_L blue
    blue = (picture[..., 2] - picture[..., 0]) > 60
    width = model_grid(phantom.ct, (2.0, 2.0, 2.0)).shape_ijk[0]  # axial, then coronal, each `width` wide
    for view in (slice(0, width), slice(width + 4, 2 * width + 4)):
        columns_red, columns_blue = np.nonzero(red[:, view])[1], np.nonzero(blue[:, view])[1]
        assert len(columns_red) > 50 and len(columns_blue) > 50
        assert columns_red.mean() < width / 2 < columns_blue.mean()
