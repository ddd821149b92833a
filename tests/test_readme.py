"""Every Python block of the README is a complete program that prints what its text
says: each is run here as it stands, in a fresh process and an empty folder."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text("utf-8"), re.S)

#: What each block prints, in the README's order (a new block needs its line here).
PRINTS = [
    r"\(5, 1, 2\) \(2, 2\)\n\{'nfe_forward': \d+, .*'nfe_backward': \d+",   # quick start
    r"^(-1\.47151\d+) (-1\.47151\d+)$",                                     # autograd
    r"^\[-?0\.0, -1\.47152\]$",                                            # stiff, banded
    r"^1\.64619\d+ 1\.64619\d+$",                                           # events
    r"\['loss', 'nfe_b', 'nfe_f'\]\n\(2, 1\)",                              # Keras
    r"^1 \d+ \d+\n10 .*\n100 .*\n1000 2\d\d 1[0-4]\d$",                    # LSODA's norm
]


def test_every_block_has_its_expected_output():
    assert len(BLOCKS) == len(PRINTS)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs_and_prints_what_the_text_says(index, tmp_path):
    script = tmp_path / f"block{index}.py"
    script.write_text(BLOCKS[index], encoding="utf-8")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                          if p))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines()
             if not re.match(r"^\s*\d+/\d+ |^Epoch \d+/\d+", ln)]  # Keras's progress bar
    assert re.search(PRINTS[index], "\n".join(lines), re.M), proc.stdout[-2000:]
