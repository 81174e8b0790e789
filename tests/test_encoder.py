import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import pytest, torch
from safetensors.torch import save_file
from med_k2n.encoder import FrameEncoder, lora_param_groups, load_backbone_weights, PRESETS


def _base(k): return k.replace('.base_layer.', '.')


@pytest.mark.parametrize('backbone', ['convnext_atto', 'sam2_hiera_tiny'])
def test_pretrained_freezes_backbone_and_adds_lora(tmp_path, backbone):
    torch.manual_seed(0)
    src = FrameEncoder(backbone, img_size=64)
    f = tmp_path / 'bb.safetensors'
    save_file(src.backbone.state_dict(), str(f))
    enc = FrameEncoder(backbone, img_size=64, pretrained_path=str(f))
    # loaded weights equal the file
    ref = src.backbone.state_dict()
    got = {_base(k): v for k, v in enc.backbone.state_dict().items() if 'lora_' not in k}
    assert set(got) == set(ref)
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    # only LoRA and non-backbone parameters train
    for n, p in enc.named_parameters():
        if n.startswith('backbone.') and 'lora_' not in n: assert not p.requires_grad, n
        else: assert p.requires_grad, n
    assert sum('lora_A' in n for n, _ in enc.named_parameters()) == len(enc.lora_targets) > 0
    groups = lora_param_groups(enc, 1e-4)
    assert {g['name']: g['lr'] for g in groups} == {'base': 1e-4, 'lora_B': pytest.approx(1.6e-3)}
    n_train = sum(p.requires_grad for p in enc.parameters())
    assert sum(len(g['params']) for g in groups) == n_train
    if backbone != 'convnext_atto': return   # the training steps below are slow for Hiera on CPU
    # a training step changes LoRA/stem but never the frozen weights
    opt = torch.optim.AdamW(groups)
    x, m = torch.rand(2, 1, 64, 64), torch.tensor([0, 1])
    for _ in range(2):
        opt.zero_grad(); sum(o.square().mean() for o in enc(x, m)).backward(); opt.step()
    got = {_base(k): v for k, v in enc.backbone.state_dict().items() if 'lora_' not in k}
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    assert any(p.abs().sum() > 0 for n, p in enc.backbone.named_parameters() if 'lora_B' in n)


def test_scratch_trains_everything_and_shapes():
    enc = FrameEncoder('convnext_atto', n_modalities=3, img_size=64)
    assert all(p.requires_grad for p in enc.parameters())
    assert lora_param_groups(enc, 1e-3)[0]['name'] == 'base' and len(lora_param_groups(enc, 1e-3)) == 1
    out = enc(torch.rand(2, 1, 64, 64), torch.tensor([0, 2]))
    assert [tuple(o.shape) for o in out] == [(2, c, 64 // r, 64 // r) for c, r in zip(enc.channels, enc.reductions)]


def test_bad_weights_file(tmp_path):
    enc = FrameEncoder('convnext_atto', img_size=64)
    save_file({'foo': torch.zeros(1)}, str(tmp_path / 'x.safetensors'))
    with pytest.raises(ValueError, match='does not fit'): load_backbone_weights(enc.backbone, tmp_path / 'x.safetensors')
    with pytest.raises(FileNotFoundError): FrameEncoder('convnext_atto', img_size=64, pretrained_path=str(tmp_path / 'none.safetensors'))
    (tmp_path / 'w.pt').write_bytes(b'0')
    with pytest.raises(ValueError, match='safetensors'): load_backbone_weights(enc.backbone, tmp_path / 'w.pt')


def test_presets_have_net_a_keys():
    for p in PRESETS.values():
        assert {'backbone', 'size', 'dim', 'mem_dim', 'stem_channels', 'd_state'} <= set(p)


# --- MultiScaleNet (med_k2n.multiscale) ---
import numpy as np
from med_k2n.multiscale import fermat_spiral_order, inverse_order, MultiScaleNet, BiSpiralMamba


@pytest.mark.parametrize('h,w', [(1, 1), (3, 3), (4, 6), (16, 16), (32, 32)])
def test_spiral_is_permutation_from_centre(h, w):
    o = fermat_spiral_order(h, w)
    assert o.dtype == torch.long and sorted(o.tolist()) == list(range(h * w))
    m = torch.randn(2, h * w)
    assert torch.equal(m[:, o][:, inverse_order(o)], m)
    yy, xx = np.divmod(o.numpy(), w)
    r = np.hypot(xx - (w - 1) / 2, yy - (h - 1) / 2)
    assert r[0] == r.min()
    if h * w >= 9:
        half = len(r) // 2
        assert r[:half].mean() < r[half:].mean()


def test_multiscale_shapes_and_ablation():
    enc = FrameEncoder('convnext_atto', img_size=64)
    feats = enc(torch.rand(2, 1, 64, 64), torch.tensor([0, 1]))[1:]
    for mixer in ('mamba', 'none'):
        net = MultiScaleNet(enc.channels[1:], dim=32, mixer=mixer, d_state=4, expand=1)
        out = net(feats)
        assert out.shape == (2, 32, 16, 16)
    with pytest.raises(ValueError): MultiScaleNet(enc.channels[1:], mixer='lstm')


def test_bispiral_state_dict_roundtrip():
    a, b = BiSpiralMamba(16, d_state=4), BiSpiralMamba(16, d_state=4)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad(): assert torch.equal(a(x), b(x))
    with torch.no_grad(): seq = a(x)          # sequential scan
    assert torch.allclose(a(x), seq, atol=1e-5)  # parallel scan (autograd on)
    assert not any('order' in k for k in a.state_dict())
