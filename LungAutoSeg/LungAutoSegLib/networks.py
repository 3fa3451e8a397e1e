"""The networks a model package may name, built from plain parameters (never an import path).

A manifest is data from an untrusted source: it chooses among these builders only, so a
package cannot make the engine import or construct anything else.
"""
from __future__ import annotations

from .errors import InputError

# The tutorial's 3D U-Net; "unet_small" halves every channel count (4x fewer weights).
UNET_DEFAULTS = {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2, "norm": "batch"}


def _unet(in_channels: int, out_channels: int, channels, strides, num_res_units=2, norm="batch", dropout=0.0):
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels,
                channels=tuple(int(c) for c in channels), strides=tuple(int(s) for s in strides),
                num_res_units=int(num_res_units), norm=str(norm), dropout=float(dropout))


def _segresnet(in_channels: int, out_channels: int, init_filters=16, blocks_down=(1, 2, 2, 4),
               blocks_up=(1, 1, 1), dropout=0.0):
    from monai.networks.nets import SegResNet

    return SegResNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels,
                     init_filters=int(init_filters), blocks_down=tuple(int(b) for b in blocks_down),
                     blocks_up=tuple(int(b) for b in blocks_up), dropout_prob=float(dropout) or None)


BUILDERS = {"UNet": _unet, "SegResNet": _segresnet}


def _torch_unet(in_channels: int, out_channels: int, channels, strides, num_res_units=2, norm="batch", dropout=0.0):
    from .torch_unet import UNet

    return UNet(in_channels, out_channels, channels=[int(c) for c in channels], strides=[int(s) for s in strides],
                num_res_units=int(num_res_units), norm=str(norm))


def build_network(spec: dict, out_channels: int, *, for_inference: bool = False):
    """``spec`` = {"class": "UNet" | "SegResNet", **parameters}; one input channel (CT).

    ``for_inference``: a UNet MONAI's class would build is built without importing MONAI
    (torch_unet.py; same parameter names and outputs, 3.8 s less start-up).
    """
    parameters = dict(spec)
    name = parameters.pop("class", None)
    if name not in BUILDERS:
        raise InputError(f"unknown network class {name!r}; known: {', '.join(BUILDERS)}")
    builder = BUILDERS[name]
    if for_inference and name == "UNet" and _torch_unet_covers(parameters):
        builder = _torch_unet
    try:
        return builder(1, out_channels, **parameters)
    except (TypeError, ValueError, AssertionError) as error:
        raise InputError(f"invalid {name} parameters {parameters}: {error}") from error


def _torch_unet_covers(parameters: dict) -> bool:
    from .torch_unet import SUPPORTED_NORMS

    return str(parameters.get("norm", UNET_DEFAULTS["norm"])) in SUPPORTED_NORMS


def downsampling_factor(spec: dict) -> int:
    """Patch sides must be multiples of this for the network's skip connections to align."""
    if spec.get("class") == "SegResNet":
        return 2 ** (len(spec.get("blocks_down", (1, 2, 2, 4))) - 1)
    factor = 1
    for stride in spec.get("strides", UNET_DEFAULTS["strides"]):
        factor *= int(stride)
    return factor
