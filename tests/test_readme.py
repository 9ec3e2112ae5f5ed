"""The README's runnable blocks pass: every fenced ```bash block runs against one deployed sandbox.

A block preceded by `<!-- not run: why -->` is skipped (it needs EKS, is the install or the test
suite itself, or is covered elsewhere, said in the reason). The others run in README order in one
bash script with `set -e -o pipefail`, so variables a block defines serve the ones after it, as
they do for a reader who pastes them in order. `.sandbox` is replaced by the test's sandbox
directory (not in host names such as
`tts.speech.sandbox.test`), and the venv's `activate` by a PATH that starts with this interpreter's directory.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.deploy_helpers import ROOT, deployed  # noqa: F401 (fixture)

BLOCK = re.compile(r"(?:<!-- not run: (?P<skip>[^>]*) -->\n)?```bash\n(?P<body>.*?)```", re.S)


def readme_blocks() -> list[tuple[int, str | None, str]]:
    """(line, reason it is not run or None, body) per ```bash block of the README."""
    text = (ROOT / "README.md").read_text()
    return [(text.count("\n", 0, m.start("body")), m.group("skip"), m.group("body")) for m in BLOCK.finditer(text)]


def test_every_bash_block_of_the_readme_is_run_or_says_why_not():
    blocks = readme_blocks()
    assert len(blocks) == (ROOT / "README.md").read_text().count("```bash")
    assert all(skip is None or skip.strip() for _, skip, _ in blocks)
    assert any(skip is None for _, skip, _ in blocks)


def test_the_readmes_runnable_blocks_pass_against_a_deployed_sandbox(deployed, tmp_path):  # noqa: F811
    root = str(Path(deployed.root))
    parts = ["set -e -o pipefail"]
    for line, skip, body in readme_blocks():
        if skip is None:
            body = re.sub(r"(?<![\w.])\.sandbox\b", root, body.replace(". .venv/bin/activate\n", ""))
            parts.append(f"echo '=== README.md line {line}' >&2\n{body}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HF_", "KUBECONFIG"))}
    env.update({"QWEN3_SANDBOX_DIR": root, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"})
    done = subprocess.run(["bash", "-c", "\n".join(parts)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 0, (done.stdout[-3000:] + done.stderr[-4000:])
