"""What the engine needs inside 3D Slicer: the Slicer module offers to pip-install these on first
use. The pins are pyproject.toml's (Testing/test_layout.py holds the two equal, so the module
never installs a version the engine was not tested with). torch comes through Slicer's
PyTorch extension instead (the platform's own build)."""

IN_SLICER = (  # (module the engine imports, pip requirement)
    ("monai", "monai>=1.5,<1.7"),
    ("safetensors", "safetensors>=0.4"),
    ("filelock", "filelock>=3.12"),
    ("tqdm", "tqdm>=4.60"),
    ("cv2", "opencv-python-headless>=4.8"),
)
# Shipped with Slicer; and the pylibjpeg plugins, which decode compressed DICOM, are not on the
# module's path: it hands the engine the loaded volume as NRRD.
SHIPPED_WITH_SLICER = ("numpy", "pydicom", "SimpleITK")
NOT_NEEDED_IN_SLICER = ("pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle")
