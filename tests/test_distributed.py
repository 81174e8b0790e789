"""Training on two processes (CPU, gloo) launched by torchrun, as on several GPUs: both ranks end with identical
weights, only rank 0 writes, validation metrics are reduced over the ranks, and the result equals one process
trained on the same global batches.

This file is also the script that torchrun runs (`python -m torch.distributed.run ... tests/test_distributed.py`)."""
import re
import os, sys, json, random, hashlib, subprocess, shutil
from pathlib import Path
import pytest

os.environ.setdefault('HF_HUB_OFFLINE', '1')
ENV = {**os.environ, 'PYTHONWARNINGS': 'ignore', 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1'}
N_TRAIN, N_VALID, BS, WORLD = 16, 11, 4, 2   # 2 steps per epoch of a global batch of 8; 11 validation slices: one padded

def torchrun(*args, nproc=WORLD, timeout=170):
    "Run `args` on `nproc` local processes with torchrun (a free port via --standalone)"
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(nproc), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)

def interleave(idxs, world:int, bs:int) -> list:
    "The order in which one process sees the global batches of `world` ranks: rank r's shard is the r-th slice of `idxs`"
    n = len(idxs)//world
    shards = [idxs[r*n:(r+1)*n] for r in range(world)]
    return [i for k in range(0, n, bs) for s in shards for i in s[k:k+bs]]

def fit_tiny(data, out, bs:int, order=None, epochs:int=2, seed:int=0):
    """Train a U-Net for `epochs` epochs of `N_TRAIN` slices on each rank (or alone), with 1→1 tasks fixed by each
    slice's pixels and no augmentation; write this rank's weights and metrics to `out`"""
    import torch
    torch.set_num_threads(1)
    from fastai.torch_core import set_seed
    from safetensors.torch import save_file
    from med_k2n.data import k2n_dataloaders
    from med_k2n.batch import K2NBatch
    from med_k2n.learner import (setup_distributed, teardown_distributed, rank_first, get_rank, k2n_learner, distrib_ctx,
                                 CheckpointCallback, unwrap_model)
    from med_k2n.tasks import TaskSampler, draw_tasks

    class PixelTasks(TaskSampler):
        "A 1→1 task per slice drawn from a hash of its pixels: the same whichever rank, batch or epoch the slice lands in"
        def before_batch(self):
            x, present, mask = self.learn.xb[:3]
            pairs = [draw_tasks(present[b:b+1].cpu(), self.modalities, random.Random(hashlib.sha256(x[b].cpu().numpy().tobytes()).hexdigest()), '1->1')
                     for b in range(len(x))]
            inputs, targets = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
            self.learn.xb, self.learn.yb = (x, inputs, targets), (K2NBatch(x, inputs, targets, mask, present),)

    set_seed(seed, reproducible=True)
    state = setup_distributed()
    rank, out = get_rank(), Path(out)
    dls = rank_first(k2n_dataloaders, data, size=32, bs=bs, augment=False, seed=seed, progress=False, device='cpu')
    assert len(dls.train.dataset) >= N_TRAIN and len(dls.valid.dataset) >= N_VALID
    dls.train.n, dls.valid.n = N_TRAIN, N_VALID
    if order is not None:
        get = dls.train.get_idxs
        dls.train.get_idxs = lambda: order(get())
    # corrupt=0: InputCorruption draws per rank, like the task sampler this test replaces by pixel-hashed tasks
    learn = k2n_learner(dls, arch='unet', base=8, depth=2, lr=1e-3, seed=seed, corrupt=0)
    learn.remove_cb(TaskSampler); learn.add_cb(PixelTasks(dls.modalities))
    init = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with learn.no_bar(), distrib_ctx(learn):
        learn.fit(epochs, 1e-3, cbs=[CheckpointCallback(out/f'ckpt-rank{rank}', epochs=epochs)])
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.contiguous() for k, v in unwrap_model(learn.model).state_dict().items()}
    save_file(sd, str(out/f'rank{rank}.safetensors'))
    save_file(init, str(out/f'init{rank}.safetensors'))
    names = learn.recorder.metric_names[1:-1]
    (out/f'rank{rank}.json').write_text(json.dumps(dict(zip(names, map(float, learn.recorder.values[-1]))), indent=1))
    teardown_distributed(state)

@pytest.fixture(scope='module')
def phantom(tmp_path_factory):
    from med_k2n.phantom import write_phantom_dataset
    d = tmp_path_factory.mktemp('dpha')
    write_phantom_dataset(d, subjects=4, size=32, seed=1, progress=False)
    return d

def _load(p):
    from safetensors.torch import load_file
    return load_file(str(p))

def _max_diff(a, b): return max(float((a[k].double()-b[k].double()).abs().max()) for k in a)

def test_two_ranks_equal_one_process(phantom, tmp_path):
    "Two ranks of bs 4 hold identical weights, write one checkpoint, and match one process of bs 8 on the same batches"
    import torch
    r = torchrun(__file__, phantom, tmp_path/'dist')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    d = tmp_path/'dist'
    w0, w1 = _load(d/'rank0.safetensors'), _load(d/'rank1.safetensors')
    assert all(torch.equal(w0[k], w1[k]) for k in w0), 'the ranks diverged'
    assert (d/'ckpt-rank0'/'model.safetensors').exists() and not (d/'ckpt-rank1').exists(), 'only rank 0 may write checkpoints'
    m0, m1 = json.loads((d/'rank0.json').read_text()), json.loads((d/'rank1.json').read_text())
    for k in ('psnr', 'ssim', 'psnr_brain', 'ssim_brain'): assert m0[k] == pytest.approx(m1[k], rel=1e-9)

    fit_tiny(phantom, tmp_path/'one', bs=BS*WORLD, order=lambda i: interleave(i, WORLD, BS))
    w = _load(tmp_path/'one'/'rank0.safetensors')
    init = _load(d/'init0.safetensors')
    assert _max_diff(init, _load(tmp_path/'one'/'init0.safetensors')) == 0   # same initial weights
    moved, diff = _max_diff(w, init), _max_diff(w, w0)
    assert moved > 1e-3, f'training barely moved the weights ({moved})'
    assert diff < 1e-4 and diff < moved/100, f'two ranks differ from one process by {diff} (updates {moved})'
    m = json.loads((tmp_path/'one'/'rank0.json').read_text())
    for k in ('psnr', 'ssim', 'psnr_brain', 'ssim_brain'): assert m0[k] == pytest.approx(m[k], rel=1e-4, abs=1e-5), (k, m0[k], m[k])

    # not vacuous: the same single process on the batches in fastai's plain order ends elsewhere
    fit_tiny(phantom, tmp_path/'plain', bs=BS*WORLD)
    assert _max_diff(_load(tmp_path/'plain'/'rank0.safetensors'), w0) > 20*diff

def test_med_k2n_train_under_torchrun(phantom, tmp_path):
    "`med-k2n train` unchanged under torchrun: the cache built once, one checkpoint, one history, one message"
    exe = Path(sys.executable).with_name('med-k2n')
    exe = str(exe) if exe.exists() else shutil.which('med-k2n')
    assert exe, 'the med-k2n console script is not installed'
    data = tmp_path/'pha'
    shutil.copytree(phantom, data, ignore=shutil.ignore_patterns('.med_k2n_cache'))
    out = tmp_path/'run'
    r = torchrun('--no-python', exe, 'train', '--data', data, '--out', out, '--size', 32, '--epochs', 1, '--bs', 4, '--arch', 'unet')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count('trained unet') == 1, r.stdout[-2000:]
    meta = json.loads((out/'model.json').read_text())
    assert meta['train']['world_size'] == 2 and meta['train']['global_bs'] == 8 and meta['epoch'] == 0
    assert len((out/'history.csv').read_text().strip().splitlines()) == 2
    caches = list((data/'.med_k2n_cache').glob('*/meta.json'))
    assert len(caches) == 1 and not list((data/'.med_k2n_cache').rglob('.tmp-*'))
    from med_k2n.registry import load_model
    assert load_model(out).size == 32

RANK_FIRST_SCRIPT = """
import os
from med_k2n.learner import setup_distributed, teardown_distributed, rank_first, get_rank
state = setup_distributed()
def build():
    if get_rank() == 0: raise FileNotFoundError('no NIfTI subjects found under /nowhere')
    raise AssertionError('rank 1 must not build after rank 0 failed')
try: rank_first(build)
except Exception as e: print(f'rank {get_rank()}: {type(e).__name__}: {e}', flush=True)
teardown_distributed(state, wait=False)
"""

def test_rank_first_passes_errors():
    "An error on rank 0 while it builds (the others waiting) stops every rank with the same error, without a hang"
    r = torchrun('--no-python', sys.executable, '-c', RANK_FIRST_SCRIPT, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    # the two ranks print concurrently into one pipe, so their lines may interleave: match messages, not lines
    msgs = sorted(re.findall(r'rank (\d): (\w+): (no NIfTI subjects found under /nowhere)', r.stdout))
    assert msgs == [(str(i), 'FileNotFoundError', 'no NIfTI subjects found under /nowhere') for i in range(2)], r.stdout

if __name__ == '__main__':  # run by torchrun in test_two_ranks_equal_one_process
    fit_tiny(sys.argv[1], sys.argv[2], bs=BS)
