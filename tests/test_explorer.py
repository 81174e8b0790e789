"Modality explorer (med_k2n.explorer): widgets drive the model, the figure shows what the model computes, only what changed is computed"
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')

import numpy as np
import pytest
import torch

from med_k2n.explorer import ModalityExplorer, explorer_case
from med_k2n.registry import save_model
from med_k2n.model import MedK2N
from med_k2n.phantom import make_phantom, write_phantom_dataset

torch.set_num_threads(1)
MS = ('t1n', 't1c', 't2w', 't2f')


class Spy:
    "Counts the calls of a model's forward and records their arguments"
    def __init__(self, model):
        self.fwd, self.calls = model.forward, []
        model.forward = self
    def __call__(self, x, inputs, targets, accept=None):
        self.calls.append(dict(x=x.clone(), inputs=inputs.clone(), targets=targets.clone(), accept=accept))
        return self.fwd(x, inputs, targets, accept=accept)


@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(0)
    return MedK2N.from_preset('cpu', size=32).eval(), make_phantom(0, size=32)


def reference(model, ex, ins, ts, z, accept):
    "The model's own outputs for one slice, computed without the explorer"
    x = torch.zeros(1, len(MS), 32, 32)
    im, tm = torch.tensor([[m in ins for m in MS]]), torch.tensor([[m in ts for m in MS]])
    for i, m in enumerate(MS):
        if m in ins: x[0, i] = torch.from_numpy(ex.x[i, z])
    with torch.no_grad(): return model.forward.fwd(x, im, tm, accept=accept)


def test_explorer_widgets_drive_model_and_figure(tiny):
    model, ph = tiny
    spy = Spy(model)
    try:
        ex = ModalityExplorer(model, ph, inputs=['t1n', 't2f'], targets=['t1c', 't2w'], accept='all')
        assert len(spy.calls) == 1
        c = spy.calls[0]
        assert c['inputs'].tolist() == [[True, False, False, True]] and c['targets'].tolist() == [[False, True, True, False]]
        assert c['accept'] == 'all'
        assert c['x'][0, [1, 2]].abs().sum() == 0          # no ground truth leaks into the input
        z1 = ex.z
        assert z1 == int(np.argmax(ex.mask.sum((1, 2))))
        # the figure shows what the model computes: inputs, synthesised targets, truth, error, quality, weights
        ref = reference(model, ex, ('t1n', 't2f'), ('t1c', 't2w'), z1, 'all')
        for j, t in ((1, 't1c'), (2, 't2w')):
            np.testing.assert_allclose(ex.shown('synth', t), ref.images[0, j].clamp(0, 1).numpy(), atol=1e-5)
            np.testing.assert_allclose(ex.shown('quality', t), ref.quality[0, j].clamp(min=0).numpy(), atol=1e-5)
            np.testing.assert_allclose(ex.shown('truth', t), ex.x[j, z1])
            np.testing.assert_allclose(ex.shown('error', t), np.abs(ex.shown('synth', t) - ex.x[j, z1]), atol=1e-6)
        np.testing.assert_allclose(ex.shown('input', 't2f'), ex.x[3, z1])
        h1 = ex.bar_heights()
        assert set(h1) == {('t1n', 't1c'), ('t2f', 't1c'), ('t1n', 't2w'), ('t2f', 't2w')}
        for (s, t), h in h1.items():
            assert h == pytest.approx(float(ref.weights[0, MS.index(s), MS.index(t)]), abs=1e-6)
        assert h1[('t1n', 't1c')] == 1.0                    # the key frame
        assert len(ex.axes['weights'].patches) == 4
        png1 = ex.image.value
        assert png1[:4] == b'\x89PNG'

        # the slider: one new model call, new images and bars; back again: no call, the same figure
        syn1 = ex.shown('synth', 't1c')
        ex.slider.value = z1 - 4
        assert (ex.z, len(spy.calls)) == (z1 - 4, 2)
        ref2 = reference(model, ex, ('t1n', 't2f'), ('t1c', 't2w'), z1 - 4, 'all')
        np.testing.assert_allclose(ex.shown('synth', 't1c'), ref2.images[0, 1].clamp(0, 1).numpy(), atol=1e-5)
        assert not np.allclose(ex.shown('synth', 't1c'), syn1)
        np.testing.assert_allclose(ex.shown('input', 't1n'), ex.x[0, z1 - 4])
        h2 = ex.bar_heights()
        assert h2[('t2f', 't1c')] == pytest.approx(float(ref2.weights[0, 3, 1]), abs=1e-6)
        assert h2[('t2f', 't1c')] != pytest.approx(h1[('t2f', 't1c')], abs=1e-6)
        assert ex.image.value != png1
        ex.show_slice(z1)
        assert len(spy.calls) == 2
        np.testing.assert_allclose(ex.shown('synth', 't1c'), syn1)
        assert ex.bar_heights() == h1

        # the toggles: an input cannot also be a target; each new selection is one call
        ex.input_buttons['t2w'].value = True
        assert (ex.inputs, ex.targets) == (('t1n', 't2w', 't2f'), ('t1c',))
        assert ex.target_buttons['t2w'].value is False and ex.target_buttons['t2w'].disabled
        assert len(spy.calls) == 3 and spy.calls[-1]['inputs'].tolist() == [[True, False, True, True]]
        assert set(ex.bar_heights()) == {('t1n', 't1c'), ('t2w', 't1c'), ('t2f', 't1c')}
        assert set(k for k in ex.axes if k != 'weights') == {('input', 't1n'), ('input', 't2w'), ('input', 't2f'),
                                                             ('synth', 't1c'), ('truth', 't1c'), ('error', 't1c'), ('quality', 't1c')}
        ex.target_buttons['t2f'].value = True               # t2f is an input: its button is disabled, and the UI wins
        assert ex.target_buttons['t2f'].value is False and 't2f' not in ex.targets
        ex.input_buttons['t1c'].value = True                 # no target left: a message, no call
        assert ex.targets == () and ex.result is None and len(spy.calls) == 3
        assert 'at least one input and one target' in ex.status.value
        ex.input_buttons['t1c'].value = False
        ex.target_buttons['t1c'].value = True
        assert len(spy.calls) == 3                           # a selection seen before: cached
        ex.select(inputs='t1n,t2f', targets=['t1c', 't2w'])
        assert len(spy.calls) == 3 and ex.bar_heights() == h1
        ex.accept_buttons.value = 'quality'
        assert len(spy.calls) == 4 and spy.calls[-1]['accept'] == 'quality'
        for k, ok in ex.result['accepted'].items():
            if not ok: assert ex.bar_heights()[k] == 0
    finally:
        model.forward = spy.fwd


def test_explorer_errors(tiny):
    model, ph = tiny
    ex = ModalityExplorer(model, {m: ph.images[m] for m in ('t1n', 't2w')})
    assert ex.targets == ('t1c', 't2f') and ex.inputs == ('t1n', 't2w') and 't1c' not in ex.input_buttons
    assert ex.shown('truth', 't1c') is None and ex.shown('error', 't2f') is None
    with pytest.raises(ValueError, match='both an input and a target'): ex.select(inputs=['t1n'], targets=['t1n', 't1c'])
    with pytest.raises(ValueError, match='can only be a target'): ex.select(inputs=['t1c'])
    with pytest.raises(ValueError, match='out of range'): ex.show_slice(-1)
    with pytest.raises(ValueError, match="model's modality set"): ex.select(targets=['pd'])
    with pytest.raises(ValueError, match="none of the model's modalities"): ModalityExplorer(model, {'pd': ph.images['t1n']})


def test_explorer_from_folders(tiny, tmp_path):
    model, _ = tiny
    dirs = write_phantom_dataset(tmp_path/'data', subjects=1, size=32, depth=6, progress=False)
    save_model(model, tmp_path/'model')
    ex = ModalityExplorer(tmp_path/'model', dirs[0], targets='t2f')
    assert ex.subject == dirs[0].name and ex.n_slices == 6 and ex.inputs == ('t1n', 't1c', 't2w')
    assert explorer_case(dirs[0], 'brats').modalities == MS
    with pytest.raises(ValueError, match='holds 2 subjects'):
        write_phantom_dataset(tmp_path/'data', subjects=2, size=32, depth=6, progress=False)
        explorer_case(tmp_path/'data', 'brats')
