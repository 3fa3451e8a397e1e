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
    if not isinstance(name, str) or name not in BUILDERS:
        raise InputError(f"unknown network class {name!r}; known: {', '.join(BUILDERS)}")
    _check_size(name, {**(UNET_DEFAULTS if name == "UNet" else {}), **parameters})
    builder = _torch_unet if for_inference and name == "UNet" else BUILDERS[name]
    try:
        return builder(1, out_channels, **parameters)
    except (TypeError, ValueError, AssertionError) as error:
        raise InputError(f"invalid {name} parameters {parameters}: {error}") from error


def _whole(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _whole_list(value, length: range, low: int, high: int) -> bool:
    return isinstance(value, list) and len(value) in length and all(_whole(v, low, high) for v in value)


def _check_size(name: str, parameters: dict) -> None:
    """Bounds on what a manifest may ask to build, so a hostile or mistyped one cannot make
    the engine allocate without limit (a billion channels) before any weight is checked."""
    dropout = parameters.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise InputError(f"invalid {name} dropout {dropout!r}: a number in [0, 1)")
    if name == "UNet":
        channels, strides = parameters.get("channels"), parameters.get("strides")
        ok = (_whole_list(channels, range(2, 9), 1, 1024) and _whole_list(strides, range(len(channels) - 1,
              len(channels)), 1, 4) and _whole(parameters.get("num_res_units"), 0, 8)
              and parameters.get("norm") in ("batch", "instance"))
    else:
        down, up = parameters.get("blocks_down", [1, 2, 2, 4]), parameters.get("blocks_up", [1, 1, 1])
        ok = (_whole(parameters.get("init_filters", 16), 1, 128) and _whole_list(list(down) if isinstance(
              down, (list, tuple)) else down, range(1, 7), 1, 8) and _whole_list(list(up) if isinstance(
              up, (list, tuple)) else up, range(len(down) - 1, len(down)), 1, 8))
    if not ok:
        raise InputError(f"invalid {name} parameters {parameters}: sizes out of the supported range")


def downsampling_factor(spec: dict) -> int:
    """Patch sides must be multiples of this for the network's skip connections to align."""
    if spec.get("class") == "SegResNet":
        return 2 ** (len(spec.get("blocks_down", (1, 2, 2, 4))) - 1)
    factor = 1
    for stride in spec.get("strides", UNET_DEFAULTS["strides"]):
        factor *= int(stride)
    return factor
