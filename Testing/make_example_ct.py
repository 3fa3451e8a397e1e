"""Make the embedded example CT (LungAutoSeg/Resources/Example/) from pyradiomics' lung2.

    .venv/bin/python Testing/make_example_ct.py

lung2_image.nrrd (512x512x61 at 0.63x0.63x5 mm, 17.8 MB) is resampled in-plane to
256x256 at 1.25 mm with Gaussian anti-aliasing, keeping its extent, orientation and
slices, and stored as int16 gzip NRRD, small enough to commit. Its BSD-3 licence and
provenance travel with it.
"""
import shutil
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "data" / "real" / "pyradiomics_lung"
TARGET = REPO / "LungAutoSeg" / "Resources" / "Example"


def main() -> int:
    image = sitk.ReadImage(str(SOURCE / "lung2_image.nrrd"))
    size, spacing = np.array(image.GetSize()), np.array(image.GetSpacing())
    new_size = [256, 256, int(size[2])]
    new_spacing = spacing * size / new_size
    sigma = [float(max(s, 1e-3)) for s in np.sqrt(np.maximum(new_spacing**2 - spacing**2, 0)) / 2.355]
    smoothed = sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), sigma)
    origin = np.array(image.GetOrigin()) + np.array(image.GetDirection()).reshape(3, 3) @ ((new_spacing - spacing) / 2)
    resampled = sitk.Resample(smoothed, [int(n) for n in new_size], sitk.Transform(), sitk.sitkLinear,
                              origin.tolist(), new_spacing.tolist(), image.GetDirection(), -1024.0,
                              sitk.sitkFloat32)
    TARGET.mkdir(parents=True, exist_ok=True)
    out = sitk.Cast(sitk.Round(resampled), sitk.sitkInt16)
    sitk.WriteImage(out, str(TARGET / "lung2_example.nrrd"), useCompression=True)
    shutil.copy(SOURCE / "LICENSE.txt", TARGET / "LICENSE-pyradiomics.txt")
    (TARGET / "README.md").write_text(
        "# Example CT\n\n`lung2_example.nrrd`: the chest CT `data/lung2_image.nrrd` of pyradiomics 3.1.0\n"
        "(https://github.com/AIM-Harvard/pyradiomics, BSD-3-Clause, licence in `LICENSE-pyradiomics.txt`),\n"
        "resampled in-plane from 512x512 at 0.63 mm to 256x256 at 1.25 mm (61 slices of 5 mm kept) by\n"
        "`Testing/make_example_ct.py`. Used by `lungautoseg segment --example`.\n")
    print(f"{TARGET / 'lung2_example.nrrd'}: {(TARGET / 'lung2_example.nrrd').stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
