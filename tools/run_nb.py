"Execute a notebook in place with execnb, saving outputs; --skip-slow leaves #| slow cells unexecuted (keeping old outputs)"
import sys, time, os
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
from fastcore.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
path = os.path.abspath(sys.argv[1]); skip = '--skip-slow' in sys.argv
nb = read_nb(path)
os.chdir(os.path.dirname(os.path.abspath(path)))
sh = CaptureShell(mpl_format='png')   # plain PNG at the figure's dpi (execnb's default 'retina' doubles every figure's pixels)
sh.run('%matplotlib inline')
for i, c in enumerate(nb.cells):
    if c.cell_type != 'code': continue
    src = c.source
    first = src.lstrip().split('\n', 1)[0]
    if first.startswith('#|') and any(f in first.split() for f in ('cuda', 'notest')): continue
    directives = [l.replace(' ', '') for l in src.lstrip().split('\n') if l.startswith('#|')]
    if '#|eval:false' in directives: continue   # nbdev's: exported, never run
    if skip and src.lstrip().startswith('#| slow'): continue
    t = time.time()
    sh.cell(c)
    dt = time.time() - t
    err = [o for o in c.get('outputs', []) if o.get('output_type') == 'error']
    print(f"cell {i}: {dt:.1f} s" + (" ERROR" if err else ''), flush=True)
    if err:
        print('\n'.join(err[0].get('traceback', []))[-3000:]); sys.exit(1)
write_nb(nb, path)
print('written', path)
