"The `med-k2n` command run in the test's own process, for tests that read what it prints (the subprocess tests use the console script)"
import contextlib, io
from med_k2n.cli import main


def cli(*args):
    "(exit code, stdout, stderr) of `med-k2n ARGS` run in this process"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()
