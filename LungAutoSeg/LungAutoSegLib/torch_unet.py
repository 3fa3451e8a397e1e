"""MONAI's 3D ``UNet`` rebuilt from ``torch.nn`` alone, for inference.

Importing MONAI takes 3.8 s on a 2-core CPU (it imports every optional package it finds:
scipy.signal, matplotlib, nibabel ...) where torch takes 1.9 s, and the whole of
``lungautoseg segment`` has 10 s. Inference needs only the network, so it is built here
with MONAI's module names: a state dict trained with ``monai.networks.nets.UNet`` loads
with ``strict=True`` and gives the same outputs (Testing/test_inference.py compares
the two on several configurations). Training still builds MONAI's own class.

Covered: what networks.py lets a manifest ask for (3D, kernel size 3, "NDA" ordering, PReLU,
batch or instance norm, its bounds on channels, strides and residual units).
"""
from __future__ import annotations

import torch
from torch import nn

SUPPORTED_NORMS = {"batch": nn.BatchNorm3d, "instance": nn.InstanceNorm3d}


class Convolution(nn.Sequential):
    """MONAI ``Convolution``: a convolution (``conv``), then norm and PReLU (``adn``)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str, *,
                 conv_only: bool = False, transposed: bool = False):
        super().__init__()
        if transposed:  # output_padding = stride - 1 doubles the size exactly, as in MONAI
            self.conv = nn.ConvTranspose3d(in_channels, out_channels, 3, stride, padding=1, output_padding=stride - 1)
        else:
            self.conv = nn.Conv3d(in_channels, out_channels, 3, stride, padding=1)
        if not conv_only:  # MONAI's ADN also holds a Dropout, which has no weights and is off in eval
            self.adn = nn.Sequential()
            self.adn.add_module("N", SUPPORTED_NORMS[norm](out_channels))
            self.adn.add_module("A", nn.PReLU())


class ResidualUnit(nn.Module):
    """MONAI ``ResidualUnit``: ``subunits`` convolutions plus a (projected) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, subunits: int, norm: str, *,
                 last_conv_only: bool = False):
        super().__init__()
        self.conv = nn.Sequential()
        channels, unit_stride = in_channels, stride
        for index in range(max(1, subunits)):
            conv_only = last_conv_only and index == max(1, subunits) - 1
            self.conv.add_module(f"unit{index}", Convolution(channels, out_channels, unit_stride, norm,
                                                             conv_only=conv_only))
            channels, unit_stride = out_channels, 1
        self.residual = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            kernel, padding = (3, 1) if stride != 1 else (1, 0)
            self.residual = nn.Conv3d(in_channels, out_channels, kernel, stride, padding)

    def forward(self, x):
        return self.conv(x) + self.residual(x)


class SkipConnection(nn.Module):
    def __init__(self, submodule: nn.Module):
        super().__init__()
        self.submodule = submodule

    def forward(self, x):
        return torch.cat([x, self.submodule(x)], dim=1)


class UNet(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, channels, strides, num_res_units: int = 0,
                 norm: str = "batch"):
        super().__init__()
        if len(channels) < 2 or len(strides) < len(channels) - 1:
            raise ValueError(f"UNet needs at least 2 channels and one stride per level, got {channels}, {strides}")
        if norm not in SUPPORTED_NORMS:
            raise ValueError(f"norm {norm!r} is not one of {sorted(SUPPORTED_NORMS)}")
        self.num_res_units, self.norm = int(num_res_units), norm
        self.model = self._block(in_channels, out_channels, list(channels), list(strides), is_top=True)

    def _block(self, inc: int, outc: int, channels, strides, is_top: bool) -> nn.Module:
        c, s = channels[0], strides[0]
        if len(channels) > 2:
            subblock, upc = self._block(c, c, channels[1:], strides[1:], False), c * 2
        else:
            subblock, upc = self._down(c, channels[1], 1), c + channels[1]
        return nn.Sequential(self._down(inc, c, s), SkipConnection(subblock), self._up(upc, outc, s, is_top))

    def _down(self, inc: int, outc: int, stride: int) -> nn.Module:
        if self.num_res_units > 0:
            return ResidualUnit(inc, outc, stride, self.num_res_units, self.norm)
        return Convolution(inc, outc, stride, self.norm)

    def _up(self, inc: int, outc: int, stride: int, is_top: bool) -> nn.Module:
        conv = Convolution(inc, outc, stride, self.norm, transposed=True,
                           conv_only=is_top and self.num_res_units == 0)
        if self.num_res_units == 0:
            return conv
        return nn.Sequential(conv, ResidualUnit(outc, outc, 1, 1, self.norm, last_conv_only=is_top))

    def forward(self, x):
        return self.model(x)
