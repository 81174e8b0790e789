"""The docs site: docstrings on every public name, README and index.ipynb in step, the sidebar listing every notebook.

What "public" means here (the docstring test):
- every module `med_k2n.<name>` (except the generated `_modidx` and `all`, which only re-exports);
- every function and class in the module's `__all__` that is defined in that module (a name re-exported
  from another module is checked where it is defined);
- every public method of those classes: each attribute defined in the class itself (in its body, or added
  with fastcore's `@patch`), not inherited, whose name does not start with `_`, and that is a function,
  classmethod, staticmethod or property (its getter). `forward` counts; dunders and `_private` do not.
A docstring is a non-blank `__doc__` written by the author: the signature that `dataclasses` puts on a
class without a docstring does not count.
"""
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')
import dataclasses, importlib, inspect, json, pkgutil, re
from pathlib import Path

import pytest
import yaml

import med_k2n

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
MODULES = sorted(m.name for m in pkgutil.iter_modules(med_k2n.__path__) if m.name not in ('_modidx', 'all'))


def _has_doc(obj) -> bool:
    doc = getattr(obj, '__doc__', None)
    if not isinstance(doc, str) or not doc.strip(): return False
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and doc.startswith(obj.__name__ + '('): return False
    return True


def _method_target(attr):
    "The function that carries the docstring of a class attribute, or None if it is not a method/property"
    if isinstance(attr, (staticmethod, classmethod)): return attr.__func__
    if isinstance(attr, property): return attr.fget
    if inspect.isfunction(attr): return attr
    return None


def undocumented(modname:str) -> list:
    "Qualified names of the public functions, classes and methods of `med_k2n.<modname>` without a docstring"
    mod = importlib.import_module(f'med_k2n.{modname}')
    missing = []
    for name in getattr(mod, '__all__', []):
        obj = getattr(mod, name, None)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)) or getattr(obj, '__module__', None) != mod.__name__: continue
        if not _has_doc(obj): missing.append(f'{modname}.{name}')
        if not inspect.isclass(obj): continue
        for an, attr in vars(obj).items():
            if an.startswith('_'): continue
            f = _method_target(attr)
            if f is not None and not _has_doc(f): missing.append(f'{modname}.{name}.{an}')
    return missing


def test_modules_found():
    assert {'core', 'io', 'model', 'inference', 'explorer'} <= set(MODULES)


@pytest.mark.parametrize('modname', MODULES)
def test_public_names_have_docstrings(modname):
    missing = undocumented(modname)
    assert not missing, f"{len(missing)} public name(s) without a docstring: {', '.join(missing)}"


def test_docstring_checker_is_not_vacuous():
    "The checker flags what it should: a function, a dataclass and a method without docstrings"
    import types
    m = types.ModuleType('med_k2n._probe')
    src = ("from dataclasses import dataclass\n__all__=['f','D','C']\n"
           "def f(): pass\n@dataclass\nclass D:\n    x:int=0\nclass C:\n    'doc'\n    def g(self): pass\n"
           "    def _h(self): pass\n    @property\n    def p(self): return 1\n")
    exec(compile(src, 'probe', 'exec'), m.__dict__)
    import sys; sys.modules['med_k2n._probe'] = m
    try: assert undocumented('_probe') == ['_probe.f', '_probe.D', '_probe.C.g', '_probe.C.p']
    finally: del sys.modules['med_k2n._probe']


# ---- README and index.ipynb say the same things

def _fenced(text:str, langs=('sh', 'bash', 'shell', 'console')) -> list:
    "The lines of the fenced code blocks in `langs` of a Markdown text"
    lines = []
    for lang, body in re.findall(r'```(\w*)\n(.*?)```', text, re.S):
        if lang in langs: lines += [l.strip() for l in body.splitlines() if l.strip()]
    return lines


def _section(text:str, title:str) -> str:
    m = re.search(rf'^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)', text, re.S | re.M)
    assert m, f"no '## {title}' section"
    return m.group(1)


def _index_text() -> str:
    nb = json.loads((NBS/'index.ipynb').read_text())
    return '\n'.join(''.join(c['source']) for c in nb['cells'])


def test_readme_two_commands_in_index():
    readme, index = (ROOT/'README.md').read_text(), _index_text()
    cmds = _fenced(_section(readme, 'Two commands'))
    assert len(cmds) >= 2, cmds
    missing = [c for c in cmds if c not in index]
    assert not missing, f"README's 'Two commands' not in nbs/index.ipynb: {missing}"
    assert _fenced(_section(index, 'Two commands')) == cmds


def test_readme_and_index_shell_blocks_agree():
    "Every shell line of the README (every `med-k2n ...` command among them) is in index.ipynb, and the other way round"
    readme, index = (ROOT/'README.md').read_text(), _index_text()
    r, i = _fenced(readme), _fenced(index)
    assert any(l.startswith('med-k2n ') for l in r)
    assert [l for l in r if l not in i] == [], "README shell lines missing from index.ipynb"
    assert [l for l in i if l not in r] == [], "index.ipynb shell lines missing from README"
    med = [l for l in readme.splitlines() if l.strip().startswith('med-k2n ')]
    assert [l for l in med if l.strip() not in index] == []


# ---- the sidebar lists every notebook, in data-flow order

def _notebooks() -> set:
    "Every notebook under nbs/, as nbdev-test and Quarto see them (no folders starting with _ or .)"
    return {p.relative_to(NBS).as_posix() for p in NBS.rglob('*.ipynb')
            if not any(part.startswith(('_', '.')) for part in p.relative_to(NBS).parts)}


def _entries(items) -> list:
    out = []
    for it in items:
        if isinstance(it, str): out.append(it)
        elif isinstance(it, dict) and 'contents' in it: out += _entries(it['contents'])
        elif isinstance(it, dict) and 'href' in it: out.append(it['href'])
        else: raise AssertionError(f"unexpected sidebar entry {it!r}")
    return out


def test_sidebar_lists_every_notebook():
    sb = yaml.safe_load((NBS/'sidebar.yml').read_text())
    listed = _entries(sb['website']['sidebar']['contents'])
    assert len(listed) == len(set(listed)), f"listed twice: {sorted({l for l in listed if listed.count(l) > 1})}"
    nbs = _notebooks()
    assert set(listed) - nbs == set(), "the sidebar lists notebooks that do not exist"
    assert nbs - set(listed) == set(), "notebooks missing from the sidebar"
    assert listed[0] == 'index.ipynb'
    # data flow: the numbered notebooks of each folder in increasing order
    for folder in {Path(l).parent.as_posix() for l in listed}:
        nums = [int(m[1]) for l in listed if Path(l).parent.as_posix() == folder and (m := re.match(r'(\d+)_', Path(l).name))]
        assert nums == sorted(nums), f"{folder}: notebooks out of order {nums}"


def test_quarto_config():
    q = yaml.safe_load((NBS/'_quarto.yml').read_text())
    assert q['project']['type'] == 'website'
    assert 'sidebar.yml' in q['metadata-files'] and 'nbdev.yml' in q['metadata-files']
    assert (NBS/'nbdev.yml').exists() and (NBS/'styles.css').exists()


# ---- the docs build itself (opt-in: it runs nbdev's docs processing of every notebook, minutes of CPU)

DOCS_BUILD = os.environ.get('MED_K2N_DOCS_BUILD') == '1'


@pytest.mark.skipif(not DOCS_BUILD, reason="set MED_K2N_DOCS_BUILD=1 to run nbdev's docs processing of every notebook (minutes)")
@pytest.mark.parametrize('nb', sorted(_notebooks()))
def test_docs_build_processes_notebook(nb, tmp_path):
    """nbdev's docs build (`nbdev-proc-nbs`, run by `nbdev-docs` and `nbdev-preview`) processes the notebook: it runs the
    exported cells, `show_doc` cells and every cell that contains an import, in order, skipping the others; a cell
    that mixes imports with code using names of a skipped cell fails the whole site build"""
    import subprocess, sys
    code = ("import sys; from pathlib import Path; from nbdev.serve_drv import main; from nbdev.processors import FilterDefaults; "
            "main((Path(sys.argv[1]), Path(sys.argv[2]), FilterDefaults))")
    r = subprocess.run([sys.executable, '-c', code, str(NBS/nb), str(tmp_path/'out.ipynb')], cwd=ROOT, capture_output=True,
                       text=True, env={**os.environ, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'})
    err = [l for l in r.stderr.splitlines() if not l.startswith(' ') and ('Error' in l or l.startswith('Exception'))]
    assert r.returncode == 0, f"nbdev's docs processing of {nb} fails: {' | '.join(err[-3:])}"
    assert (tmp_path/'out.ipynb').exists()
