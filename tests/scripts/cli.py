"""Many command lines of one script in one fresh Python process, each as the shell would run it.

Bad-input checks run a script a dozen times with one wrong value each; a subprocess per line costs a Python,
torch and MuJoCo start-up (4-6 s on a loaded 2-core machine) for a few milliseconds of checking. ``run_lines``
starts one interpreter, runs the script as ``__main__`` once per line with that line as ``sys.argv`` (Hydra clears
its global state after each run), and reports each line's exit status, stdout and stderr as the interpreter would:
``sys.exit("message")`` prints the message to stderr with status 1, an uncaught exception prints its traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_DRIVER = r"""
import contextlib, io, json, runpy, sys, traceback

script, lines = sys.argv[1], json.load(sys.stdin)
results = []
for line in lines:
    out, err = io.StringIO(), io.StringIO()
    sys.argv = [script, *line]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as exit_:
            code = exit_.code
            if code is None:
                code = 0
            elif not isinstance(code, int):
                print(code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
    results.append({"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
sys.__stdout__.write("\n" + json.dumps(results))
"""


@dataclass
class Line:
    """What one command line did: its exit status and output, as ``subprocess.CompletedProcess`` has them."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def run_lines(script: Path, lines: list[list[str]], cwd: Path, env: dict[str, str] | None = None,
              timeout: int = 300) -> list[Line]:
    """Run ``script`` once per entry of ``lines`` (its arguments) in one interpreter started in ``cwd`` with
    ``env`` (default: this environment, one torch thread, the repository on PYTHONPATH)."""
    cwd.mkdir(parents=True, exist_ok=True)
    if env is None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", _DRIVER, str(script)], input=json.dumps(lines), cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the driver itself failed (status {proc.returncode}):\n{proc.stderr[-3000:]}")
    results = json.loads(proc.stdout.rsplit("\n", 1)[-1])
    return [Line(line, **result) for line, result in zip(lines, results, strict=True)]
