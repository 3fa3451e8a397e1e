"""The inference core: the sliding window, and the network it runs (MONAI's U-Net without MONAI)."""
import numpy as np
import pytest
import torch

from LungAutoSegLib.inference import predict_probabilities, window_size
from LungAutoSegLib.networks import build_network
from LungAutoSegLib.plan import Inference


TINY = {"class": "UNet", "channels": [4, 8], "strides": [2], "num_res_units": 1, "norm": "batch"}


def test_the_window_is_the_whole_image_up_to_the_largest_and_the_training_patch_for_a_slab():
    settings = Inference(patch_size=(96, 96, 64), window=(208, 208, 160))  # (i, j, k); shapes, windows (k, j, i)
    assert window_size((122, 129, 129), settings, 16) == (128, 144, 144)  # one window
    assert window_size((300, 250, 230), settings, 16) == (160, 208, 208)  # sliding
    assert window_size((6, 140, 140), settings, 16) == (64, 96, 96)       # a thin slab


def _randomised(network):
    """Random weights and batch-norm statistics, so every layer changes the output."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in network.state_dict().items():
            if tensor.is_floating_point():  # variances positive
                low, width = (0.75, 0.5) if "running_var" in name else (-0.2, 0.4)
                tensor.copy_(low + width * torch.rand(tensor.shape, generator=generator))
    return network.eval()


@pytest.mark.parametrize("spec", [
    {"class": "UNet", "channels": [8, 16, 32, 64, 128], "strides": [2, 2, 2, 2], "num_res_units": 2, "norm": "batch"},
    {"class": "UNet", "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0, "norm": "instance"},
    {"class": "UNet", "channels": [4, 8, 16, 16], "strides": [2, 1, 2], "num_res_units": 1, "norm": "batch"},
])
def test_the_inference_unet_is_monais_unet_without_monai(spec):
    monai_unet = _randomised(build_network(spec, out_channels=3))
    ours = build_network(spec, out_channels=3, for_inference=True)
    assert type(ours).__module__ == "LungAutoSegLib.torch_unet"
    ours.load_state_dict(monai_unet.state_dict(), strict=True)  # same parameter names and shapes
    x = torch.rand(1, 1, 32, 48, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.allclose(ours.eval()(x), monai_unet(x), atol=1e-5)


def test_one_window_gives_what_monais_sliding_window_gives():
    from monai.inferers import sliding_window_inference

    network = _randomised(build_network(TINY, out_channels=2))
    image = np.random.default_rng(2).random((21, 30, 27), dtype=np.float32)  # (k, j, i)
    settings = Inference(patch_size=(16, 16, 16), window=(64, 64, 64), padding="replicate")
    ours = predict_probabilities(network, image, settings, "cpu", multiple=2)
    with torch.inference_mode():
        logits = sliding_window_inference(torch.from_numpy(image)[None, None], (22, 30, 28), 1, network,
                                          overlap=0.25, mode="gaussian", padding_mode="replicate")
    assert ours.shape == (2, 21, 30, 27)
    assert torch.allclose(ours, torch.softmax(logits, dim=1)[0], atol=1e-5)
