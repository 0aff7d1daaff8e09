"""`module:function` loading: the current directory is searched, but never first."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_folder_in_the_cwd_cannot_shadow_an_installed_package(tmp_path):
    # A planted package named like an installed one (tqdm is a dependency) and a reward module.
    (tmp_path / "tqdm").mkdir()
    (tmp_path / "tqdm" / "__init__.py").write_text("raise SystemExit('planted tqdm ran')\n")
    (tmp_path / "myreward.py").write_text("def score(prompts, responses):\n    return [1.0]\n")
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from training.callables import load_callable
        fn = load_callable("myreward:score")
        assert fn(["p"], ["r"]) == [1.0]
        import tqdm
        assert "site-packages" in tqdm.__file__, tqdm.__file__
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok"
