"Acceptance tests of the network (SPEC §3): MedK2N and UNetBaseline on tiny inputs"
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import json, pytest, torch
import torch.nn as nn
from med_k2n.core import eval_patterns, parse_task, MODALITY_SETS
from med_k2n.model import MedK2N
from med_k2n.baseline import UNetBaseline
from med_k2n.quality import quality_loss
from med_k2n.registry import create_model, list_models

MS = MODALITY_SETS['brats']

def pattern_batch(ms=MS):
    pats = eval_patterns(ms)
    return (torch.tensor([p.masks(ms)[0] for p in pats]), torch.tensor([p.masks(ms)[1] for p in pats]))

def task_batch(task, n, ms=MS):
    i, t = parse_task(task, ms).masks(ms)
    return torch.tensor([i] * n), torch.tensor([t] * n)

def check_out(out, inputs, targets, S):
    B, M = inputs.shape
    assert out.images.shape == (B, M, S, S) and out.quality.shape == (B, M, S, S)
    assert out.scores.shape == (B, M) and out.weights.shape == (B, M, M)
    assert (out.images[~targets] == 0).all() and (out.quality[~targets] == 0).all() and (out.scores[~targets] == 0).all()
    assert (out.images[targets] >= 0).all() and (out.images[targets] <= 1).all()
    assert torch.isfinite(out.images).all() and torch.isfinite(out.quality).all()
    pair = inputs[:, :, None] & targets[:, None, :]
    assert (out.weights[~pair] == 0).all()

@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return MedK2N.from_preset('cpu', 'brats', size=64).eval()

def test_every_pattern_and_mixed_batch(model):
    inputs, targets = pattern_batch()
    x = torch.rand(len(inputs), 4, 64, 64)
    with torch.no_grad(): out = model(x, inputs, targets)
    check_out(out, inputs, targets, 64)
    key = inputs.long().argmax(1)
    assert (out.weights[torch.arange(len(x)), key][targets] == 1).all()
    for b in (0, 6, 13):     # a 1-, 2- and 3-input pattern alone (one sample) agree with the mixed batch
        with torch.no_grad(): o = model(x[b:b+1], inputs[b:b+1], targets[b:b+1])
        check_out(o, inputs[b:b+1], targets[b:b+1], 64)
        torch.testing.assert_close(o.images, out.images[b:b+1], atol=1e-4, rtol=0)

def test_non_inputs_have_no_influence(model):
    inputs, targets = pattern_batch()
    x = torch.rand(len(inputs), 4, 64, 64)
    x2 = x.clone(); x2[~inputs] = torch.rand_like(x2[~inputs]) * 5 - 2
    with torch.no_grad(): a, b = model(x, inputs, targets), model(x2, inputs, targets)
    for k in a.keys(): assert torch.equal(getattr(a, k), getattr(b, k)), k

def test_gradients_reach_every_fusion_and_quality_parameter():
    torch.manual_seed(1)
    m = MedK2N.from_preset('cpu', 'brats', size=64).train()
    i, t = task_batch('t1n,t2w,t2f->t1c', 2)
    x = torch.rand(2, 4, 64, 64)
    out = m(x, i, t)
    loss = (out.images - x).abs()[t].mean() + quality_loss(out, x, t)
    loss.backward()
    for part in ('weighting.pre.', 'weighting.threshold.', 'weighting.effi.', 'mem_attention.', 'quality_net.'):
        ps = [(n, p) for n, p in m.named_parameters() if n.startswith(part)]
        assert ps, part
        dead = [n for n, p in ps if p.grad is None or not p.grad.abs().sum() > 0]
        assert not dead, dead
    # forward and loss change no running state; the update after the step moves p_ij of the two auxiliary sources for t1c, nothing else
    h = m.weighting.threshold.history
    assert not h.any() and not m.target_prior.count.any() and not m.state_quality.count.any()
    m.update_running_stats(out, x, i, t)
    assert sorted(h.nonzero().tolist()) == [[2, 1], [3, 1]]
    assert m.target_prior.count[1] == 2 and m.state_quality.count.sum() == 2

def test_each_ablation_switch_changes_the_output(model):
    i, t = task_batch('t1n,t1c,t2w->t2f', 2)
    x = torch.rand(2, 4, 64, 64)
    res = {}
    with torch.no_grad():
        for mode in ('B0', 'B1', 'B2', 'B3'):
            model.fusion = mode; res[mode] = model(x, i, t, accept='all').images
        model.fusion = 'full'
        nomix = MedK2N.from_config({**model.config, 'mixer': 'none'}).eval()
        miss, unexp = nomix.load_state_dict(model.state_dict(), strict=False)
        assert not miss
        res['none'] = nomix(x, i, t, accept='all').images
    ks = list(res)
    for a in range(len(ks)):
        for b in range(a + 1, len(ks)): assert not torch.equal(res[ks[a]], res[ks[b]]), (ks[a], ks[b])

class _Falling(nn.Module):
    "State-quality predictor patched so that every call scores lower than the previous one: every gain < 0 (the real one's table still orders the frames)"
    def __init__(self, sq): super().__init__(); self.calls, self.table, self.bits = 0, sq.table, sq.bits
    def forward(self, S, *args):
        self.calls += 1
        return S.new_full((len(S),), -float(self.calls))

def test_accept_quality_undoes_negative_gain_updates(model):
    i, t = task_batch('t1n,t1c,t2w->t2f', 2)
    x = torch.rand(2, 4, 64, 64)
    sq = model.state_quality; model.state_quality = _Falling(sq)
    try:
        with torch.no_grad():
            oa, oq = model(x, i, t, accept='all'), model(x, i, t, accept='quality')
            key_only = i & (i.long().cumsum(1) == 1)
            ok = model(x, key_only, t)
    finally: model.state_quality = sq
    assert (oa.gains[:, 1:3, 3] < 0).all()
    assert oa.accepted[:, :3, 3].all() and not oq.accepted[:, 1:3, 3].any()
    assert not torch.allclose(oa.images, oq.images)
    torch.testing.assert_close(oq.images, ok.images, atol=1e-5, rtol=0)   # as if only the key frame were given
    assert (oq.weights[:, 1:3, 3] == 0).all() and (oa.weights[:, 1:3, 3] > 0).all()
    # with a real predictor, eval defaults to accept='quality' and all gains are recorded
    with torch.no_grad(): o = model(x, i, t)
    assert torch.equal(o.accepted[:, 1:3, 3], o.gains[:, 1:3, 3] >= 0)

def test_config_round_trip_and_errors(model):
    c = json.loads(json.dumps(model.config))
    assert MedK2N.from_config(c).config == model.config
    with pytest.raises(ValueError, match='unknown model .medk2n_big.: use one of medk2n_cpu, medk2n_paper, unet_cpu, unet_paper'): MedK2N.from_preset('big')
    with pytest.raises(ValueError, match="unknown decoder options"): MedK2N(decoder=dict(width=8))
    i, t = task_batch('t1n->t1c', 1)
    with pytest.raises(ValueError, match='both an input and a target'): model(torch.rand(1, 4, 64, 64), i, i)
    with pytest.raises(ValueError, match='no input modality'): model(torch.rand(1, 4, 64, 64), i & False, t)
    assert 'GFLOPs' in model.summary()

def test_cpu_preset_at_128():
    m = MedK2N.from_preset('cpu', 'ixi').eval()
    inputs, targets = pattern_batch(MODALITY_SETS['ixi'])
    with torch.no_grad(): check_out(m(torch.rand(len(inputs), 3, 128, 128), inputs, targets), inputs, targets, 128)

def test_paper_preset_small():
    m = MedK2N.from_preset('paper', 'brats', size=64).eval()
    inputs, targets = pattern_batch()
    sel = [0, 4, 10, 13]
    with torch.no_grad(): check_out(m(torch.rand(4, 4, 64, 64), inputs[sel], targets[sel]), inputs[sel], targets[sel], 64)

def test_baseline():
    net = UNetBaseline.from_preset('cpu', 'brats', size=64).eval()
    inputs, targets = pattern_batch()
    x = torch.rand(len(inputs), 4, 64, 64)
    with torch.no_grad(): out = net(x, inputs, targets)
    check_out(out, inputs, targets, 64)
    x2 = x.clone(); x2[~inputs] = 1 - x2[~inputs]
    with torch.no_grad(): assert torch.equal(net(x2, inputs, targets).images, out.images)
    assert UNetBaseline.from_config(json.loads(json.dumps(net.config))).config == net.config
    # parameter count in the range of the cpu MedK2N
    ratio = UNetBaseline.from_preset('cpu').n_params() / MedK2N.from_preset('cpu', size=64).n_params()
    assert 0.5 < ratio < 2, ratio


def test_registry_presets_and_constructor_size():
    "One factory for the four presets; MedK2N's constructor stays small (issue: about a dozen arguments)"
    import inspect
    assert list_models() == ['medk2n_cpu', 'medk2n_paper', 'unet_cpu', 'unet_paper']
    assert len(inspect.signature(MedK2N.__init__).parameters) - 1 <= 13
    m = create_model('medk2n_cpu', size=32)
    assert isinstance(m, MedK2N) and m.config['preset'] == 'medk2n_cpu' and m.size == 32
    assert isinstance(create_model('unet_paper', size=32), UNetBaseline)
