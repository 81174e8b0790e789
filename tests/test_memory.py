import torch, pytest
from med_k2n.memory import MemoryEncoder, MemoryBank, MemoryAttention


def _bank(menc, f_key, f_aux, valid_aux, w=None):
    P = f_key.shape[0]
    bank = MemoryBank()
    bank.append(menc(f_key, torch.zeros(P, dtype=torch.long)), torch.ones(P, dtype=torch.bool))
    bank.append(menc(f_aux, torch.ones(P, dtype=torch.long), w), valid_aux)
    return bank


@pytest.mark.parametrize('train', [False, True])
def test_invalid_memory_has_no_influence(train):
    torch.manual_seed(0)
    P, dim, md = 4, 32, 16
    menc, matt = MemoryEncoder(dim, md, 3), MemoryAttention(dim, md, n_heads=2, n_layers=2)
    menc.train(train); matt.train(train)
    f_key, f_aux, f_q = torch.randn(3, P, dim, 16, 16).unbind(0)
    valid = torch.tensor([True, False, True, False])
    w = torch.rand(P, 1, 16, 16)
    with torch.no_grad():
        a = matt(f_q, _bank(menc, f_key, f_aux, valid, w))
        f_aux2 = f_aux.clone(); f_aux2[~valid] = torch.randn_like(f_aux2[~valid]) * 50
        w2 = w.clone(); w2[~valid] = 1.
        b = matt(f_q, _bank(menc, f_key, f_aux2, valid, w2))
    assert torch.equal(a[~valid], b[~valid])
    f_aux3 = f_aux.clone(); f_aux3[valid] += 1
    with torch.no_grad(): c = matt(f_q, _bank(menc, f_key, f_aux3, valid, w))
    assert not torch.equal(a[valid], c[valid]) and torch.equal(a[~valid], c[~valid])


def test_gradients_reach_all_parameters():
    P, dim, md = 2, 32, 16
    menc, matt = MemoryEncoder(dim, md, 3), MemoryAttention(dim, md, n_heads=4, n_layers=1)
    f_key, f_aux, f_q = torch.randn(3, P, dim, 8, 8).unbind(0)
    bank = _bank(menc, f_key, f_aux, torch.tensor([True, False]), torch.rand(P, 1, 8, 8))
    matt(f_q, bank).square().mean().backward()
    dead = [n for n, p in [*menc.named_parameters(), *matt.named_parameters()] if p.grad is None or p.grad.abs().sum() == 0]
    assert dead == []


def test_bank_shapes_and_errors():
    bank = MemoryBank()
    assert len(bank) == 0
    with pytest.raises(ValueError, match='empty'): bank.tokens()
    bank.append(torch.randn(2, 4, 8), torch.tensor([True, False]))
    bank.append(torch.randn(2, 4, 8), torch.tensor([True, True]))
    assert bank.tokens().shape == (2, 8, 8) and bank.mask().shape == (2, 8)
    assert bank.mask()[1].tolist() == [False] * 4 + [True] * 4
    assert torch.equal(bank.tokens()[1, :4], torch.zeros(4, 8))
    with pytest.raises(ValueError): bank.append(torch.randn(3, 4, 8), torch.ones(3, dtype=torch.bool))
    matt = MemoryAttention(32, 8, n_heads=2)
    with pytest.raises(ValueError, match='do not fit'): matt(torch.randn(2, 32, 16, 16), bank)   # 16 tokens/frame vs 4
    out = matt(torch.randn(2, 32, 8, 8), bank)
    assert out.shape == (2, 32, 8, 8)
    assert matt(torch.randn(2, 32, 8, 8), MemoryBank()).shape == (2, 32, 8, 8)   # empty bank: self-attn + MLP only
