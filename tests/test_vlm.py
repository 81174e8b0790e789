"Modality CLIP (med_k2n.vlm) and CMIM losses (med_k2n.cmim): gradients, identity, checkpoints"
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import json, pickle, contextlib, io
import pytest
import torch
import torch.nn as nn

from med_k2n.core import MODALITIES
from med_k2n.vlm import (DESCRIPTIONS, pretrain_vlm, small_clip_config, load_vlm, save_vlm, make_vlm,
                         gather_slices, predict_modality, pretrain_vlm_cmd)
from med_k2n.cmim import CMIM, identity_accuracy

torch.set_num_threads(min(2, torch.get_num_threads()))
TINY = small_clip_config(32, width=16, text_width=64, text_layers=1, embed_dim=32)  # the CPU preset's ResNet tower, small text side


@pytest.fixture(scope='session')
def phantom(tmp_path_factory):
    "A 6-subject, 32-px phantom prepared into a slice cache, and a tiny VLM pretrained on it once per session"
    from med_k2n.phantom import write_phantom_dataset
    from med_k2n.data import prepare
    d = tmp_path_factory.mktemp('vlm')
    write_phantom_dataset(d/'ph', subjects=6, size=32, progress=False)
    cache = prepare(d/'ph', d/'cache', size=32, progress=False)
    vlm = pretrain_vlm(cache, d/'vlm', size=32, epochs=12, bs=4, lr=2e-3, config=TINY, progress=False)
    x, present, _ = gather_slices(cache, ['valid', 'test'])
    return dict(dir=d, cache=cache, vlm=vlm, x=torch.from_numpy(x).float(), present=torch.from_numpy(present))


def test_descriptions_cover_vocabulary():
    assert set(DESCRIPTIONS) == set(MODALITIES)
    assert all(len(v) >= 3 and len(set(v)) == len(v) for v in DESCRIPTIONS.values())


def test_pretrained_vlm_identifies_heldout(phantom):
    vlm, x, present = phantom['vlm'], phantom['x'], phantom['present']
    # a tiny 32-px model after a few seconds still mixes T1n and T1c up, but T2w is rarely called T1c
    conf = vlm.info['confusion']
    assert conf[2][2] > 2 * conf[2][1], conf
    cfg = json.loads((phantom['dir']/'vlm'/'vlm.json').read_text())
    assert cfg['modalities'] == ['t1n', 't1c', 't2w', 't2f'] and cfg['size'] == 32
    assert sum(map(sum, cfg['confusion'])) == int(present.sum())


def test_frozen_vlm_gets_no_gradient_generator_does(phantom):
    vlm, x = phantom['vlm'], phantom['x']
    cmim = CMIM(vlm)
    before = {k: v.clone() for k, v in vlm.state_dict().items()}
    gen = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1), nn.Sigmoid())
    opt = torch.optim.SGD(gen.parameters(), lr=0.1)
    B = 4
    targets = torch.zeros(B, 4, dtype=torch.bool); targets[:, 2] = True    # t1n -> t2w
    for _ in range(3):
        cmim.train()
        y = gen(x[:B, :1])                                                 # [B,1,S,S]
        y.retain_grad()
        pred = torch.zeros_like(x[:B]); pred = torch.cat([pred[:, :2], y, pred[:, 3:]], 1)
        out = cmim(pred, x[:B], targets, phantom['present'][:B])
        loss = out['causal'] + out['metric']
        opt.zero_grad(); loss.backward()
        assert y.grad is not None and y.grad.abs().sum() > 0               # gradient reaches the generated image
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gen.parameters())
        assert all(not p.requires_grad and p.grad is None for p in vlm.parameters())
        opt.step()
    assert not vlm.training
    for k, v in vlm.state_dict().items(): assert torch.equal(v, before[k]), k


def test_causal_prefers_true_label(phantom):
    vlm, x = phantom['vlm'], phantom['x']
    cmim = CMIM(vlm)
    t2w, t1c = vlm.modalities.index('t2w'), vlm.modalities.index('t1c')
    real = x[:, t2w]
    right = cmim.causal(real, torch.full((len(real),), t2w), reduction='none')
    wrong = cmim.causal(real, torch.full((len(real),), t1c), reduction='none')
    assert right.mean() < wrong.mean()
    assert (right < wrong).float().mean() > 0.7


def test_metric_zero_on_real_target_positive_on_other_modality(phantom):
    vlm, x = phantom['vlm'], phantom['x']
    cmim = CMIM(vlm, alpha=0.2)
    t1n, t2w = vlm.modalities.index('t1n'), vlm.modalities.index('t2w')
    pos, neg = x[:, t2w], x[:, t1n]
    same = cmim.metric(pos, pos, neg, reduction='none')
    with torch.no_grad(): d_pn = 1 - (cmim.embed(pos) * cmim.embed(neg)).sum(-1)
    # d(v, v) = 0, so the loss is exactly max(0, α − d(pos, neg)): zero wherever the VLM separates the contrasts by α
    torch.testing.assert_close(same, torch.relu(0.2 - d_pn), atol=1e-5, rtol=0)
    assert (same[d_pn >= 0.2] == 0).all()
    assert CMIM(vlm, alpha=0.0).metric(pos, pos, neg).item() == 0.0
    other = cmim.metric(neg, pos, neg, reduction='none')                   # "generated" = the negative itself
    assert (other > 0).all() and (other >= 0.2 - 1e-5).all()


def test_identity_accuracy(phantom):
    vlm, x = phantom['vlm'], phantom['x']
    imgs = torch.cat([x[:, m] for m in range(4)]); lab = torch.arange(4).repeat_interleave(len(x))
    assert abs(identity_accuracy(vlm, imgs, lab) - vlm.info['accuracy']) < 1e-6
    assert identity_accuracy(vlm, x[:, 2], 't2w') == identity_accuracy(vlm, x[:, 2], [2]*len(x))


def test_load_refuses_mismatch(phantom):
    d = phantom['dir']/'vlm'
    v = load_vlm(d, modalities=('t1n', 't1c', 't2w', 't2f'), size=32)
    with torch.no_grad():
        torch.testing.assert_close(predict_modality(v, phantom['x'][:4, 0]), predict_modality(phantom['vlm'], phantom['x'][:4, 0]))
    with pytest.raises(ValueError, match='pretrained for modalities t1n, t1c, t2w, t2f but t1n, t2w, pd'):
        load_vlm(d, modalities='ixi')
    with pytest.raises(ValueError, match='pretrained on 32-pixel slices but the data are 128-pixel'):
        load_vlm(d, size=128)
    with pytest.raises(ValueError, match='knows modalities .* but not pd'):
        CMIM(v, 'ixi')


def test_load_never_unpickles(phantom, tmp_path, monkeypatch):
    d = tmp_path/'ck'
    save_vlm(phantom['vlm'], d)
    def boom(*a, **k): raise AssertionError('unpickling attempted')
    monkeypatch.setattr(torch, 'load', boom)
    monkeypatch.setattr(pickle, 'load', boom); monkeypatch.setattr(pickle, 'loads', boom)
    v = load_vlm(d)
    assert v.modalities == phantom['vlm'].modalities
    # a torch/pickle file in place of the weights is refused, not executed
    (d/'vlm.safetensors').write_bytes(pickle.dumps({'a': 1}))
    with pytest.raises(ValueError, match='cannot be read as safetensors'):
        load_vlm(d)
    (d/'vlm.json').write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match='not a med_k2n VLM config'):
        load_vlm(d)


def test_cli_pretrain(phantom, tmp_path, capsys):
    "The command line of the issue and the README: `med-k2n pretrain-vlm --data DIR --out DIR [--size S] [--epochs E]`"
    from med_k2n.cli import main
    out = tmp_path/'vlmcli'
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(['pretrain-vlm', '--data', str(phantom['dir']/'ph'), '--out', str(out), '--size', '32', '--epochs', '1', '--bs', '8'])
    assert rc == 0
    assert 'zero-shot identity accuracy' in buf.getvalue()
    assert sorted(p.name for p in out.iterdir()) == ['vlm.json', 'vlm.safetensors']
    assert load_vlm(out, size=32).size == 32
    with pytest.raises(FileNotFoundError, match='med-k2n phantom'):
        pretrain_vlm_cmd(str(tmp_path/'nope'), str(out))
    with pytest.raises(ValueError, match='--data DIR'):
        pretrain_vlm_cmd(out=str(out))
