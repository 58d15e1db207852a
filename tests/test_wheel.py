"""A wheel of dpo_lab works outside the checkout: tokenizer, every tiny data set, one DPO step.

The wheel is built by pip from a ``git+file://`` URL of a commit of the checkout's files (what
``pip install git+https://...`` does) and installed into a throwaway virtual
environment that sees only the installed distributions pyproject's core dependencies need
(tests/installs.py; torch there is the CPU build this environment installed from its local
wheel). pip installs the wheel with ``--no-index``, so it must find every core dependency, at
the declared bounds, among those. Then a script run from a folder outside the checkout loads
everything the tiny profile ships. With ``DPO_LAB_FRESH_INSTALL=1`` the environment is built
from nothing instead: torch from the local wheel, the rest resolved from the package index
(minutes, not for every CI run).
"""

import json
import os
import subprocess
import sys
import textwrap
import time

from installs import ROOT, clean_env, declared, make_venv, snapshot

from dpo_lab.tokenizer import load_tokenizer

SCRIPT = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    start = time.perf_counter()
    import dpo_lab
    from dpo_lab.paths import data_dir
    from dpo_lab.tokenizer import load_tokenizer
    from dpo_lab.data import SAMPLE_PATH, load_jsonl
    from dpo_lab.tasks import code, moderation, sentiment, summarization
    from dpo_lab.models import tiny_gpt2
    from dpo_lab.train import train_dpo

    tok = load_tokenizer()
    pairs = load_jsonl(SAMPLE_PATH)
    counts = {
        "sample_preferences": len(pairs),
        "sentiment_reviews": len(sentiment.load_reviews("generated", "train")),
        "moderation_messages": len(moderation.load_messages("generated", "sft")),
        "summarization_docs": len(summarization.load_documents("sft")),
        "code_tasks": len(code.load_tasks()),
    }
    policy = tiny_gpt2(tok, seed=0, n_layer=1, n_embd=32, n_head=2)
    reference = tiny_gpt2(tok, seed=0, n_layer=1, n_embd=32, n_head=2).eval()
    log = train_dpo(policy, reference, tok, pairs[:4], batch_size=4, epochs=1, lr=1e-3, progress=False)
    print(json.dumps({
        "dpo_lab": dpo_lab.__file__, "data_dir": str(data_dir()), "vocab": len(tok),
        "roundtrip": tok.decode(tok("Review: The film was wonderful.")["input_ids"]),
        "counts": counts, "steps": len(log), "loss": float(log["loss"].iloc[0]),
        "trl_loaded": "trl" in sys.modules, "seconds": time.perf_counter() - start,
    }))
""")


def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    t0 = time.perf_counter()
    # pip builds the wheel from a git URL, as `pip install git+https://...` (and git+file://) does: from a clone
    src = snapshot(tmp_path / "src")
    identity = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):
        subprocess.run(["git", *command], cwd=src, check=True, env=clean_env(**identity))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(tmp_path / "dist"), f"dpo_lab @ git+{src.as_uri()}"], check=True, env=clean_env())
    (wheel,) = (tmp_path / "dist").glob("dpo_lab-*.whl")
    if os.environ.get("DPO_LAB_FRESH_INSTALL") == "1":
        subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
        python = tmp_path / "venv" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
        subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True, env=clean_env())
        subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, env=clean_env())
    else:
        python = make_venv(tmp_path / "venv", declared("core"))
        subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-index",
                        str(wheel)], check=True, env=clean_env())
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    done = subprocess.run([str(python), "-c", SCRIPT], cwd=outside, capture_output=True, text=True,
                          env=clean_env(OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    venv = str(tmp_path / "venv")
    assert out["dpo_lab"].startswith(venv) and str(ROOT) not in out["dpo_lab"]
    assert out["data_dir"].startswith(venv) and out["data_dir"].endswith(os.path.join("dpo_lab", "_data"))
    assert out["vocab"] == len(load_tokenizer()) == 825 and out["roundtrip"] == "Review: The film was wonderful."
    assert out["counts"] == {"sample_preferences": 64, "sentiment_reviews": 2400, "moderation_messages": 600,
                             "summarization_docs": 1500, "code_tasks": 128}
    assert out["steps"] == 1 and abs(out["loss"] - 0.6931) < 1e-3  # policy == reference at step 0: log 2
    assert not out["trl_loaded"]
    print(f"wheel test: {time.perf_counter() - t0:.1f} s in all, {out['seconds']:.1f} s in the script")
