"""Refuse a CT that cannot be contoured in this machine's memory, before reading its voxels.

``lungautoseg segment`` peaks at about 16 bytes per CT voxel (the int16 CT, a float32 copy
for anti-aliasing, the interpolated masks and label maps; 0.79 GB for 34 M voxels including
torch and the model). A 1024x1024x1500 CT would need about 25 GB: it is refused with that
figure rather than swapping the machine to a halt or being killed half-way.
LUNGAUTOSEG_MEMORY_GB sets the memory to plan with (default: what Linux reports available).
"""
from __future__ import annotations

import os

from .errors import InputError

BYTES_PER_VOXEL = 16


def available_bytes() -> int | None:
    setting = os.environ.get("LUNGAUTOSEG_MEMORY_GB")
    if setting:
        try:
            return int(float(setting) * 1024**3)
        except ValueError:
            raise InputError(f"LUNGAUTOSEG_MEMORY_GB must be a number of gigabytes, not {setting!r}") from None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None  # unknown (not Linux): no refusal


def check_fits(shape_ijk, source) -> None:
    voxels = int(shape_ijk[0]) * int(shape_ijk[1]) * int(shape_ijk[2])
    needed, available = voxels * BYTES_PER_VOXEL, available_bytes()
    if available is not None and needed > available:
        size = "x".join(str(int(n)) for n in shape_ijk)
        raise InputError(f"CT of {size} voxels would need about {needed / 1024**3:.1f} GB of memory to contour; "
                         f"{available / 1024**3:.1f} GB is available (resample it, or crop it to the thorax)", source)
