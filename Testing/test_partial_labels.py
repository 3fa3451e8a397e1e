"""Partial labels: a structure a case does not contour is unlabelled, never taught as background."""
import numpy as np
import torch

from LungAutoSegLib.plan import Inference
from lungautoseg_train.config import DEFAULTS
from lungautoseg_train.data import PatchDataset, PreparedCase
from lungautoseg_train.train import SegmentationLoss
from lungautoseg_train.transforms import train_transform

STRUCTURES = ["Lung_R", "Heart"]


def _logits(winner: torch.Tensor) -> torch.Tensor:
    """Confident logits (batch 1, classes 3, 4x4x4): class ``winner[k, j, i]`` wins each voxel."""
    return torch.nn.functional.one_hot(winner, 3).permute(3, 0, 1, 2)[None].float() * 8.0


def test_an_unlabelled_heart_where_the_label_says_background_costs_nothing():
    label = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    label[0, 0, :2] = 1  # Lung_R in the lower half; the rest is "background" in a case without a Heart contour
    truth = label[0, 0].clone()
    heart_there = truth.clone()
    heart_there[2:, :2] = 2  # the network puts the heart in part of that "background"
    loss = SegmentationLoss("dice_ce")
    unlabelled = torch.tensor([[False, True]])
    assert abs(loss(_logits(heart_there), label, unlabelled) - loss(_logits(truth), label, unlabelled)) < 1e-3
    assert np.isnan(loss.per_structure[1]) and loss.per_structure[0] < 0.01  # the Heart's Dice is not scored
    # the same prediction on a case that contours the heart (and has none there) is penalised
    assert loss(_logits(heart_there), label) > loss(_logits(truth), label) + 0.3
    # a missed lung is penalised whether or not the heart is labelled
    assert loss(_logits(torch.zeros_like(truth)), label, unlabelled) > loss(_logits(truth), label, unlabelled) + 0.3


def test_the_marginal_loss_has_gradients_and_leaves_ignore_voxels_out():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, 8, requires_grad=True)
    label = torch.randint(0, 3, (2, 1, 8, 8, 8))
    label[1][label[1] == 2] = 0  # the second case has no Heart contour
    label[:, :, :2] = 255  # IGNORE
    unlabelled = torch.tensor([[False, False], [False, True]])
    SegmentationLoss("dice_ce")(logits, label, unlabelled).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    logits.grad = None
    SegmentationLoss("ce")(logits, label, unlabelled).backward()
    assert logits.grad[:, :, :2].abs().max() == 0 and logits.grad[:, :, 2:].abs().max() > 0


def test_which_structures_a_case_lacks_reaches_every_patch_of_a_batch():
    config = {**DEFAULTS, "data": {**DEFAULTS["data"], "structures": STRUCTURES}, "samples_per_case": 2}
    image = np.random.default_rng(0).random((24, 24, 24), dtype=np.float32)
    label = np.zeros((24, 24, 24), np.uint8)
    label[8:16, 8:16, 8:16] = 1
    cases = [PreparedCase("whole", image, label, np.array([False, False])),
             PreparedCase("no_heart", image, label, np.array([False, True]))]
    dataset = PatchDataset(cases, train_transform(config, Inference(patch_size=(16, 16, 16))), seed=0)
    from monai.data import list_data_collate

    batch = list_data_collate([dataset[0], dataset[1]])
    assert batch["image"].shape == (4, 1, 16, 16, 16)
    assert batch["unlabelled"].tolist() == [[False, False], [False, False], [False, True], [False, True]]


def test_batch_dice_scores_each_structure_over_the_batch_and_skips_where_no_sample_labels_it():
    label = torch.zeros(2, 1, 4, 4, 4, dtype=torch.long)
    label[0, 0, :2] = 1  # the first patch holds the lung; the second none of it
    perfect = torch.nn.functional.one_hot(label[:, 0], 2).permute(0, 4, 1, 2, 3).float() * 8.0  # background, lung
    per_patch, batch = SegmentationLoss("dice_ce"), SegmentationLoss("batch_dice_ce")
    # a perfect prediction costs nothing with batch Dice; per patch, the patch without a lung still
    # pays (a Dice near 0) for the lung probability that softmax leaves everywhere
    assert batch(perfect, label) < 0.01 and per_patch(perfect, label) > 0.2
    with_heart = torch.cat([perfect, torch.zeros(2, 1, 4, 4, 4) - 8.0], dim=1)  # background, lung, heart
    batch(with_heart, label, torch.tensor([[False, True], [False, True]]))  # no patch contours the heart
    assert np.isnan(batch.per_structure[1]) and batch.per_structure[0] < 0.01


def test_patch_centres_follow_the_class_ratios():
    config = {**DEFAULTS, "data": {**DEFAULTS["data"], "structures": STRUCTURES}, "samples_per_case": 40,
              "class_ratios": [0, 0, 1]}  # every patch centred on the Heart
    label = np.zeros((24, 48, 48), np.uint8)
    label[4:20, 4:20, 4:20], label[10:14, 40:44, 40:44] = 1, 2
    case = PreparedCase("c", np.zeros(label.shape, np.float32), label, np.array([False, False]))
    patches = PatchDataset([case], train_transform(config, Inference(patch_size=(8, 8, 8))), seed=0)[0]
    assert all((np.asarray(p["label"])[0, 4, 4, 4] == 2) for p in patches)  # the centre voxel: Heart
