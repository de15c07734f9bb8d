"""Clustering and resampling on constructed inputs where the right answer is known."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from ttsvar_core.engine import (BatchSchedule, cluster_select, pca_maps, potential, preset, resample,
                                resampling_weights)
from ttsvar_core.engine.selection import feature_vectors



class Features:
    def __init__(self, patch_tokens, pooled):
        self.patch_tokens, self.pooled = patch_tokens, pooled


def test_three_obvious_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10]], dtype=float)
    points = np.concatenate([c + 0.1 * rng.standard_normal((4, 2)) for c in centres])
    order = rng.permutation(12)
    chosen = cluster_select(points[order], 3)
    groups = {int(order[i]) // 4 for i in chosen}
    assert groups == {0, 1, 2} and len(chosen) == 3
    for c in chosen:  # the kept member is the one nearest its cluster's centre
        group = int(order[c]) // 4
        members = [i for i in range(12) if int(order[i]) // 4 == group]
        centre = points[order][members].mean(0)
        assert c == min(members, key=lambda i: np.linalg.norm(points[order][i] - centre))


def test_duplicates_still_give_k_distinct_candidates():
    points = np.array([[0.0, 0.0]] * 5 + [[1.0, 1.0]])
    chosen = cluster_select(points, 3)
    assert len(set(chosen)) == 3


def test_clustering_rejects_non_finite_features():
    with pytest.raises(ValueError, match="NaN"):
        cluster_select(np.array([[0.0], [np.nan], [1.0]]), 2)


def test_pca_sign_convention_keeps_equal_structures_together():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(1, 16, 8, generator=g)
    flipped = 2 * tokens.mean(1, keepdim=True) - tokens  # same structure, principal axis reversed
    maps = pca_maps(torch.cat([tokens, flipped]))
    assert torch.allclose(maps[0], maps[1], atol=1e-5)


@pytest.mark.parametrize("patches,channels", [(16, 8), (6, 24)])  # both Gram shapes
def test_pca_maps_match_the_svd_projection(patches, channels):
    g = torch.Generator().manual_seed(1)
    # a clear first axis per image, plus noise
    tokens = torch.randn(4, patches, 1, generator=g) * 5 * torch.randn(4, 1, channels, generator=g) \
        + torch.randn(4, patches, channels, generator=g)
    centred = tokens.double() - tokens.double().mean(1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    expected = torch.einsum("npc,nc->np", centred, vh[:, 0])
    maps = pca_maps(tokens).double()
    sign = torch.sign((maps * expected).sum(1, keepdim=True))
    assert torch.allclose(maps, sign * expected, atol=1e-4)
    assert maps.gather(1, maps.abs().argmax(1, keepdim=True)).min() > 0


def test_feature_modes():
    f = Features(torch.randn(3, 16, 8), torch.randn(3, 5))
    assert feature_vectors(f, "pca").shape == (3, 16)
    assert feature_vectors(f, "pool").shape == (3, 8)
    assert feature_vectors(f, "global").shape == (3, 5)
    with pytest.raises(ValueError, match="global"):
        feature_vectors(Features(None, torch.randn(3, 5)), "pca")


def test_potentials_over_a_history():
    nan = float("nan")
    history = torch.tensor([[nan, 1.0, nan, 3.0],
                            [nan, 2.0, nan, 1.0],
                            [nan, nan, nan, 5.0]])
    assert potential(history, 3, "value").tolist() == [3.0, 1.0, 5.0]
    assert potential(history, 3, "diff").tolist() == [2.0, -1.0, 5.0]
    assert potential(history, 3, "max").tolist() == [3.0, 2.0, 5.0]
    assert potential(history, 3, "sum").tolist() == [4.0, 3.0, 5.0]
    assert potential(history, 1, "diff").tolist()[:2] == [1.0, 2.0]  # nothing earlier: value


def test_potentials_over_every_scale_as_the_paper_defines_them():
    """A history scored at every scale from the first clustering (scale 2) to a resampling at scale 6."""
    nan = float("nan")
    history = torch.tensor([[nan, nan, 0.1, 0.4, 0.2, 0.3, 0.5],
                            [nan, nan, 0.6, 0.2, 0.1, 0.9, 0.4]])
    assert potential(history, 6, "value").tolist() == pytest.approx([0.5, 0.4])
    assert potential(history, 6, "diff").tolist() == pytest.approx([0.5 - 0.3, 0.4 - 0.9])   # r_6 - r_5
    assert potential(history, 6, "max").tolist() == pytest.approx([0.5, 0.9])
    assert potential(history, 6, "sum").tolist() == pytest.approx([0.1 + 0.4 + 0.2 + 0.3 + 0.5,
                                                                   0.6 + 0.2 + 0.1 + 0.9 + 0.4])


def test_history_scales_from_the_first_selection_to_the_last_resampling():
    paper = preset("tts-var-2b")
    assert paper.history_scales() == ()                               # value reads the current reward only
    assert replace(paper, potential="diff").history_scales() == (2, 3, 4, 5, 7, 8)  # 6 and 9 score anyway
    assert replace(preset("tts-var-8b"), potential="max").history_scales() == (2, 3, 4, 5, 7)
    assert replace(preset("bon"), potential="sum").history_scales() == ()  # nothing to resample


def test_dominant_reward_wins_every_draw():
    weights, note = resampling_weights(torch.tensor([0.1, 5.0, 0.2, 0.0]), lam=10.0)
    assert note == "" and weights[1] > 0.999
    draws = resample(weights, 16, torch.Generator().manual_seed(0))
    assert set(draws) == {1}


def test_large_rewards_do_not_overflow():
    weights, _ = resampling_weights(torch.tensor([1e4, 1e4 - 1.0]), lam=10.0)
    assert torch.isfinite(weights).all() and abs(float(weights.sum()) - 1) < 1e-6 and weights[0] > 0.99


def test_non_finite_reward_policy():
    w, note = resampling_weights(torch.tensor([1.0, float("nan"), 2.0]), lam=1.0)
    assert w[1] == 0 and "NaN" in note and w[2] > w[0] > 0  # finite rewards keep their information
    w, note = resampling_weights(torch.tensor([1.0, float("inf"), float("inf"), 3.0]), lam=1.0)
    assert w.tolist() == [0.0, 0.5, 0.5, 0.0] and "+inf" in note
    w, note = resampling_weights(torch.tensor([float("nan"), -float("inf")]), lam=1.0)
    assert w.tolist() == [0.5, 0.5] and "uniform" in note
    w, _ = resampling_weights(torch.tensor([-float("inf"), 0.0]), lam=1.0)
    assert w.tolist() == [0.0, 1.0]


def test_schedule_presets_and_validation():
    paper = preset("tts-var-2b", n=2)
    assert paper.sizes == (16, 16, 12, 12, 12, 8, 4, 4, 4, 2, 2, 2, 2)
    assert preset("tts-var-8b").num_scales == 10
    assert preset("bon", n=4, num_scales=7).sizes == (4,) * 7
    with pytest.raises(ValueError, match="not a clustering or resampling scale"):
        BatchSchedule(base_sizes=(4, 2, 2), cluster_scales=(), resample_scales=()).validate()
    with pytest.raises(ValueError, match=">= 1"):
        BatchSchedule(base_sizes=(4, 0, 0), cluster_scales=(1,), resample_scales=()).validate()
    with pytest.raises(ValueError, match="out of range"):
        BatchSchedule(base_sizes=(4, 4), cluster_scales=(5,), resample_scales=()).validate()
    with pytest.raises(ValueError, match="must not grow"):
        BatchSchedule(base_sizes=(4, 6), cluster_scales=(1,), resample_scales=()).validate()
    with pytest.raises(ValueError, match="13 entries but the image schedule has 7"):
        BatchSchedule().validate(7)
    with pytest.raises(ValueError, match="unknown potential"):
        BatchSchedule(potential="best").validate()
    rescaled = BatchSchedule().rescaled(7).validate(7)
    assert rescaled.sizes[0] == 8 and rescaled.sizes[-1] == 1
