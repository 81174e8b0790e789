"BraSyn scoring: percentile normalisation, 3-D SSIM in tumour and healthy brain on a hand-computed case, Dice of the BraTS regions, the balanced drop assignment"
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
from collections import Counter

import numpy as np
import pytest

from med_k2n.brasyn import (PSNR_CAP, dice, drop_one_modality, percentile_normalize, region_dice, ssim_volume_map,
                            synthesis_scores)

LUMINANCE = (2 * .5 * 1 + 1e-4) / (.25 + 1 + 1e-4)  # SSIM of constant windows 0.5 vs 1 (C1 = 0.01²), 0.800016
F32 = 5e-3  # torchmetrics' float32 3-D SSIM leaves ~1e-5 variances in constant windows (see nbs/24_brasyn.ipynb)


def block_case():
    "Real brain: 32³ cube, halves 10 and 20; synthesis: a 13³ block of 15 in the bright half; tumour: its 3³ core"
    real = np.zeros((40, 40, 40), np.float32)
    real[4:36, 4:36, 4:36] = 10
    real[20:36, 4:36, 4:36] = 20
    synth = real.copy()
    synth[21:34, 13:26, 13:26] = 15
    seg = np.zeros(real.shape, np.uint8)
    seg[26:29, 18:21, 18:21] = 3
    return real, synth, seg


def test_percentile_normalize_known_array():
    v = np.zeros((3, 7, 11), np.float32)
    v.flat[:201] = np.arange(1, 202)       # percentiles 0.5 and 99.5 of 1..201: 2 and 200
    n = percentile_normalize(v)
    np.testing.assert_allclose(n.flat[:201], (np.clip(np.arange(1, 202), 2, 200) - 2) / 198, atol=1e-6)
    assert (n.flat[201:] == 0).all()
    np.testing.assert_allclose(percentile_normalize(2 * v + 5, mask=v != 0), n, atol=1e-6)


def test_ssim_percentile_normalised_hand_computed():
    real, synth, seg = block_case()
    r = synthesis_scores(synth, real, seg)
    assert r['ssim_tumour'] == pytest.approx(LUMINANCE, abs=F32)
    assert r['tumour_voxels'] == 27
    assert r['mse'] == pytest.approx(.25 * 13**3 / 32**3, rel=1e-5)
    assert r['psnr'] == pytest.approx(10 * np.log10(32**3 / (.25 * 13**3)), abs=1e-3)
    assert r['ssim_tumour'] < r['ssim_healthy'] < 1
    # each volume on its own percentiles: a gain and offset of the synthesis change nothing
    assert synthesis_scores(3 * synth + 7 * (real != 0), real, seg) == r
    # the error is inside the block: moving the tumour label to a far corner of the bright half scores ~1 there
    far = np.zeros_like(seg); far[32:35, 5:8, 5:8] = 1
    assert synthesis_scores(synth, real, far)['ssim_tumour'] > .999


def test_ssim_map_identical_and_constant():
    y = np.random.default_rng(0).random((16, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(ssim_volume_map(y, y), 1, atol=1e-5)
    a, b = np.full((13, 13, 13), .5, np.float32), np.ones((13, 13, 13), np.float32)
    assert ssim_volume_map(a, b)[6, 6, 6] == pytest.approx(LUMINANCE, abs=F32)


def test_synthesis_scores_errors():
    real, synth, seg = block_case()
    with pytest.raises(ValueError, match='share one grid'): synthesis_scores(synth[:30], real, seg)
    with pytest.raises(ValueError, match='labels'): synthesis_scores(synth, real, seg + 7)
    with pytest.raises(ValueError, match='brain mask is empty'): synthesis_scores(synth, np.zeros_like(real))
    r = synthesis_scores(synth, real)            # no segmentation: no tumour SSIM
    assert np.isnan(r['ssim_tumour']) and r['ssim_healthy'] == r['ssim_brain']
    assert synthesis_scores(real, real, seg)['psnr'] == PSNR_CAP


def test_dice_known_masks():
    truth = np.array([[1, 1, 2], [2, 2, 3], [3, 0, 0]])
    pred = np.array([[1, 1, 2], [2, 0, 1], [3, 0, 2]])
    # hand counts: ET {3}: truth 2 voxels, pred 1, shared 1 -> 2/3; TC {1,3}: the same 4 voxels in both -> 1;
    # WT: 7 voxels each ((1,1) missed, (2,2) added), 6 shared -> 12/14
    assert region_dice(pred, truth) == pytest.approx({'ET': 2 / 3, 'TC': 1.0, 'WT': 12 / 14})
    assert dice(np.zeros(5), np.zeros(5)) == 1.0                      # both empty: BraTS convention
    assert np.isnan(dice(np.zeros(5), np.zeros(5), empty=np.nan))
    assert dice(np.array([0, 1, 0]), np.zeros(3)) == 0.0              # only one empty
    assert dice(np.zeros(3), np.array([1, 0, 0])) == 0.0
    assert region_dice(np.array([0, 4]), np.array([0, 3]))['ET'] == 1.0   # BraTS 2021 label 4 is ET


@pytest.mark.parametrize('n', [1, 4, 10, 23])
def test_drop_one_modality_balanced_and_deterministic(n):
    ids = [f'BraTS-GLI-{i:05d}-000' for i in range(n)]
    d = drop_one_modality(ids, seed=3)
    assert sorted(d) == ids
    counts = Counter(d.values())
    assert set(counts) <= {'t1n', 't1c', 't2w', 't2f'} and sum(counts.values()) == n
    assert max(counts.values()) - min(counts.get(m, 0) for m in ('t1n', 't1c', 't2w', 't2f')) <= 1
    assert drop_one_modality(list(reversed(ids)), seed=3) == d
    assert drop_one_modality(ids, seed=3) == d


def test_drop_one_modality_seed_and_errors():
    ids = [f's{i:02d}' for i in range(12)]
    draws = {tuple(drop_one_modality(ids, seed=s).values()) for s in range(6)}
    assert len(draws) > 1
    assert set(drop_one_modality(ids, modalities='t1n,t2w').values()) == {'t1n', 't2w'}
    with pytest.raises(ValueError, match='more than once'): drop_one_modality(['a', 'b', 'a'])
    with pytest.raises(ValueError): drop_one_modality(ids, modalities='t1n,bogus')
