"""Draws the 128x128 extension icon (LungAutoSeg.png and the module's copy).

Two lungs seen on an axial CT, the patient's right lung (the viewer's left, as on
every radiology screen) filled in the product's Lung_R colour with its contour.
Run: python Testing/draw_icon.py
"""
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

REPO = Path(__file__).resolve().parents[1]
LUNG_R = (80, 160, 220)
SIZE, SCALE = 128, 4  # drawn 4x larger, then downsampled for smooth edges


def lung(draw: ImageDraw.ImageDraw, x0: float, mirror: bool, fill, outline) -> None:
    # a lung seen axially: rounded outside, flattened towards the mediastinum
    points = [(0, 30), (8, 12), (22, 6), (36, 10), (42, 30), (40, 62), (44, 84), (30, 96),
              (14, 98), (4, 86), (0, 60)]
    if mirror:
        points = [(44 - x, y) for x, y in points]
    shape = [((x0 + x) * SCALE, (14 + y) * SCALE) for x, y in points]
    draw.polygon(shape, fill=fill)
    draw.line(shape + [shape[0]], fill=outline, width=3 * SCALE, joint="curve")


def draw() -> Image.Image:
    big = SIZE * SCALE
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    d = ImageDraw.Draw(image)
    d.rounded_rectangle([2 * SCALE, 2 * SCALE, big - 2 * SCALE, big - 2 * SCALE],
                        radius=22 * SCALE, fill=(28, 32, 40, 255))
    d.ellipse([8 * SCALE, 10 * SCALE, 120 * SCALE, 118 * SCALE], fill=(120, 120, 120, 255))
    d.rounded_rectangle([60 * SCALE, 10 * SCALE, 68 * SCALE, 46 * SCALE], radius=4 * SCALE,
                        fill=(28, 32, 40, 255))  # trachea
    lung(d, 14, False, (*LUNG_R, 255), (255, 255, 255, 255))
    lung(d, 70, True, (45, 45, 50, 255), (170, 170, 170, 255))
    d.ellipse([56 * SCALE, 92 * SCALE, 72 * SCALE, 108 * SCALE], fill=(235, 235, 225, 255))  # spine
    return image.filter(ImageFilter.GaussianBlur(SCALE / 3)).resize((SIZE, SIZE), Image.LANCZOS)


if __name__ == "__main__":
    icon = draw()
    for path in (REPO / "LungAutoSeg.png", REPO / "LungAutoSeg" / "Resources" / "Icons" / "LungAutoSeg.png"):
        icon.save(path, optimize=True)
        print(path)
