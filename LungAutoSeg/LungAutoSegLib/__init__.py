"""LungAutoSeg engine: CT, RTSTRUCT and SEG I/O on one geometry convention, inference, and the checks.

No Qt and no ``slicer`` import here: this package runs in Slicer's Python, in a plain
virtual environment, and in the subprocess the Slicer module starts.
"""
from .errors import InputError
from .volume import Volume

__version__ = "0.1.0"
__all__ = ["InputError", "Volume", "__version__"]
