"""A stand-in Hugging Face Hub: an offline cache in which every id the full profile names exists.

``build(home)`` writes ``home/hub`` (models, in ``huggingface_hub``'s cache layout:
``models--org--name/refs/main`` holding a commit hash and ``snapshots/<hash>/<files>``) and
``home/datasets`` (datasets, as ``datasets`` prepares them: ``org___name/<config>/0.0.0/<hash>/``
with Arrow files and ``dataset_info.json``). With ``HF_HOME=home``, ``HF_HUB_OFFLINE=1`` and
``HF_DATASETS_OFFLINE=1`` the course's own calls (``from_pretrained("gpt2")``,
``load_dataset("stanfordnlp/imdb", split="train")``) resolve from there; nothing is patched.

Every stand-in has the real architecture class, config fields, tokenizer class and special
tokens (GPT-2's tokenizer has no pad token), dataset configs, splits, column names, feature
types and ordering (IMDb sorted by label; SMS Spam's ``sms`` with its trailing newline; MBPP's
``full`` config), at tiny sizes with random weights. One stand-in is trained: the code model
(``codeparrot/codeparrot-small``) is fitted briefly to the stand-in MBPP's programs, correct
and buggy, so it writes both passing and failing programs as the real one does.

Run ``python -m tests.standin_hub DIR`` to build one by hand.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
from pathlib import Path

#: bump when the stand-ins change: part of the cache folder's name
VERSION = 1

MODELS = ("gpt2", "lvwerra/distilbert-imdb", "codeparrot/codeparrot-small",
          "OpenAssistant/reward-model-deberta-v3-large-v2")
DATASETS = ("stanfordnlp/imdb", "trl-lib/tldr", "trl-lib/tldr-preference", "google-research-datasets/mbpp",
            "ucirvine/sms_spam", "ylecun/mnist")


def _sha(repo_id: str) -> str:
    return hashlib.sha1(f"standin-{VERSION}-{repo_id}".encode()).hexdigest()


# --- models -------------------------------------------------------------------------------

def _model_repo(hub: Path, repo_id: str, save) -> Path:
    """Write a model repo in the hub cache layout; ``save(folder)`` writes its files."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    sha = _sha(repo_id)
    snapshot = repo / "snapshots" / sha
    snapshot.mkdir(parents=True, exist_ok=True)
    save(snapshot)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(sha)
    return snapshot


def _corpus() -> list[str]:
    """Text for the stand-in tokenizers: the course's own generators (reviews, documents, messages)."""
    from dpo_lab.tasks import moderation, sentiment, summarization

    texts = [r["text"] for r in sentiment.generate_reviews(400, seed=1)]
    texts += [d["document"] + " " + d["summary"] for d in summarization.generate_documents(100, seed=1)]
    texts += [m["text"] for m in moderation.generate_messages(200, seed=1)]
    texts += [moderation.to_prompt("x") + moderation.to_completion(v) for v in ("allow", "flag")]
    return texts


def _byte_bpe(texts, vocab_size: int):
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer(add_prefix_space=False)
    tok.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    return tok


def _gpt2_tokenizer(texts, vocab_size: int, model_max_length: int = 1024):
    """GPT-2's tokenizer class and special tokens: ``<|endoftext|>`` is BOS, EOS and UNK; no pad token."""
    from transformers import GPT2TokenizerFast

    tok = GPT2TokenizerFast(tokenizer_object=_byte_bpe(texts, vocab_size)._tokenizer, bos_token="<|endoftext|>",
                            eos_token="<|endoftext|>", unk_token="<|endoftext|>", model_max_length=model_max_length,
                            add_prefix_space=False)
    assert tok.pad_token is None
    return tok


def _gpt2(tokenizer, n_positions: int = 1024, seed: int = 0):
    """GPT-2's config fields (1024 positions, dropout 0.1, tied embeddings) at a tiny width and depth."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        architectures=["GPT2LMHeadModel"])
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config)


def _distilbert_imdb(texts):
    """``lvwerra/distilbert-imdb``: DistilBERT for sequence classification, labels NEGATIVE / POSITIVE."""
    import tempfile

    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import DistilBertConfig, DistilBertForSequenceClassification, DistilBertTokenizerFast

    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(texts, vocab_size=600, show_progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        wp.save_model(tmp)
        tokenizer = DistilBertTokenizerFast(vocab_file=str(Path(tmp) / "vocab.txt"), do_lower_case=True,
                                            model_max_length=512)
    config = DistilBertConfig(vocab_size=len(tokenizer), dim=32, hidden_dim=64, n_layers=1, n_heads=2,
                              max_position_embeddings=512, id2label={0: "NEGATIVE", 1: "POSITIVE"},
                              label2id={"NEGATIVE": 0, "POSITIVE": 1}, pad_token_id=tokenizer.pad_token_id,
                              architectures=["DistilBertForSequenceClassification"])
    torch.manual_seed(1)
    return tokenizer, DistilBertForSequenceClassification(config)


def _deberta_reward_model(texts):
    """``OpenAssistant/reward-model-deberta-v3-large-v2``: DeBERTa-v2 classifier with one logit."""
    import torch
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification, DebertaV2TokenizerFast

    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    sp = SentencePieceUnigramTokenizer()
    sp.train_from_iterator(texts, vocab_size=600, special_tokens=specials, unk_token="[UNK]", show_progress=False)
    from tokenizers.processors import TemplateProcessing

    sp._tokenizer.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", sp.token_to_id("[CLS]")), ("[SEP]", sp.token_to_id("[SEP]"))])
    tokenizer = DebertaV2TokenizerFast(tokenizer_object=sp._tokenizer, bos_token="[CLS]", eos_token="[SEP]",
                                       cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]",
                                       mask_token="[MASK]", model_max_length=512)
    config = DebertaV2Config(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=512, relative_attention=True,
                             position_buckets=256, pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm",
                             share_att_key=True, num_labels=1, pad_token_id=tokenizer.pad_token_id,
                             architectures=["DebertaV2ForSequenceClassification"])
    torch.manual_seed(2)
    return tokenizer, DebertaV2ForSequenceClassification(config)


# --- MBPP-like tasks, and the code model fitted to them -------------------------------------

_MBPP_KINDS = [
    ("add", "Write a function to add {k} to a number.", "def add_{k}(x):\n    return x + {k}",
     "def add_{k}(x):\n    return x - {k}", "add_{k}({a}) == {r}", lambda k, a: a + k),
    ("mul", "Write a function to multiply a number by {k}.", "def mul_{k}(x):\n    return x * {k}",
     "def mul_{k}(x):\n    return x + {k}", "mul_{k}({a}) == {r}", lambda k, a: a * k),
    ("head", "Write a function to return the first {k} items of a list.", "def head_{k}(xs):\n    return xs[:{k}]",
     "def head_{k}(xs):\n    return xs[{k}:]", "head_{k}([{a}, 1, 2, 3, 4, 5, 6, 7, 8, 9]) == {r}",
     lambda k, a: [a, 1, 2, 3, 4, 5, 6, 7, 8, 9][:k]),
]


def mbpp_rows(start: int, n: int, seed: int) -> list[dict]:
    """``n`` MBPP-schema rows (``task_id``, ``text``, ``code``, ``test_list``...) of small functions."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        name, text, code, _, test, fn = _MBPP_KINDS[i % len(_MBPP_KINDS)]
        k = rng.randint(2, 9)
        tests = [f"assert {test.format(k=k, a=a, r=fn(k, a))}" for a in (rng.randint(0, 9), rng.randint(10, 20), 3)]
        rows.append({"task_id": start + i, "text": text.format(k=k), "code": code.format(k=k),
                     "test_list": tests, "test_setup_code": "", "challenge_test_list": []})
    return rows


def _mbpp_bug(row: dict) -> str:
    for _name, _text, code, bug, _, _ in _MBPP_KINDS:
        for k in range(2, 10):
            if code.format(k=k) == row["code"]:
                return bug.format(k=k)
    raise ValueError(row["code"])


def _code_model(rows: list[dict], steps: int = 300):
    """``codeparrot/codeparrot-small``'s classes at tiny size, fitted to MBPP-format programs.

    The corpus is each task's prompt (as :func:`dpo_lab.tasks.code.mbpp_to_task` writes it)
    followed by the correct program or a buggy one, so the model writes both.
    """
    import torch

    from dpo_lab.tasks.code import mbpp_to_task
    from dpo_lab.train import train_sft

    prompts, completions = [], []
    for row in rows:
        task = mbpp_to_task(row)
        prompts += [task["prompt"]] * 2
        completions += ["\n" + row["code"] + "\n", "\n" + _mbpp_bug(row) + "\n"]
    tokenizer = _gpt2_tokenizer(prompts + completions, vocab_size=400, model_max_length=2048)
    model = _gpt2(tokenizer, n_positions=2048, seed=3)
    torch.manual_seed(3)
    tokenizer.pad_token = tokenizer.eos_token  # for training only (dpo_lab.tokenizer does the same on load)
    train_sft(model, tokenizer, prompts, completions, epochs=steps * 16 / len(prompts), batch_size=16, lr=3e-3,
              seed=3, progress=False, desc="stand-in code model")
    tokenizer.pad_token = None  # the checkpoint's tokenizer has none, as the real one
    assert tokenizer.pad_token is None
    return tokenizer, model.eval()


# --- datasets -------------------------------------------------------------------------------

def _prepared_dataset(cache: Path, repo_id: str, config_name: str, splits: dict, features) -> None:
    """Write ``repo_id``'s ``config_name`` as ``datasets`` prepares a Hub dataset in its cache.

    The data go through the packaged Parquet builder (the one ``datasets`` uses for a Hub
    repo of Parquet files), named as the Hub repo, so ``load_dataset(repo_id, config_name)``
    with ``HF_DATASETS_OFFLINE=1`` finds the prepared build.
    """
    import tempfile

    import datasets
    from datasets.packaged_modules.parquet.parquet import Parquet, ParquetConfig

    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for split, rows in splits.items():
            path = Path(tmp) / f"{split}-00000-of-00001.parquet"
            datasets.Dataset.from_list(rows, features=features).to_parquet(str(path))
            files[split] = [str(path)]
        data_files = datasets.data_files.DataFilesDict.from_patterns(files)

        namespace, name = repo_id.split("/")

        class StandIn(Parquet):
            BUILDER_CONFIGS = [ParquetConfig(name=config_name, data_files=data_files, features=features)]

            def _relative_data_dir(self, with_version=True, with_hash=True) -> str:
                # where a build of the Hub repo lives: <namespace>___<name>/<config>/<version>/<hash>
                # (the builder is not given repo_id only because its data files are local, not hf://)
                return f"{namespace}___" + super()._relative_data_dir(with_version, with_hash)

        builder = StandIn(cache_dir=str(cache), dataset_name=name, config_name=config_name, hash=_sha(repo_id))
        builder.download_and_prepare()


def _imdb_rows(n_per_label: int, seed: int) -> list[dict]:
    from dpo_lab.tasks import sentiment

    rng = random.Random(seed)
    reviews = sentiment.generate_reviews(6 * n_per_label, seed=seed)
    rows = []
    for label in (0, 1):  # the Hub's IMDb splits are sorted by label: every negative review first
        texts = [r["text"] for r in reviews if r["label"] == label][:n_per_label]
        rows += [{"text": t.replace(". ", ".<br /><br />", 1) if rng.random() < 0.3 else t, "label": label}
                 for t in texts]
    return rows


def _tldr_rows(n: int, seed: int) -> list[dict]:
    from dpo_lab.tasks import summarization

    docs = summarization.generate_documents(n, seed=seed)
    return [{"prompt": f"SUBREDDIT: r/movies\n\nTITLE: a film I saw\n\nPOST: {d['document']}\n\nTL;DR:",
             "completion": " " + d["summary"]} for d in docs]


def _tldr_preference_rows(n: int, seed: int) -> list[dict]:
    rows = _tldr_rows(n, seed)
    rng = random.Random(seed)
    out = []
    for row in rows:
        words = row["completion"].split()
        rng.shuffle(words)
        out.append({"prompt": row["prompt"], "chosen": row["completion"], "rejected": " " + " ".join(words[:4])})
    return out


def _sms_rows(n: int, seed: int) -> list[dict]:
    from dpo_lab.tasks import moderation

    rng = random.Random(seed)
    rows = []
    for m in moderation.generate_messages(n, seed=seed):
        spam = m["label"] == "flag" and rng.random() < 0.8
        rows.append({"sms": m["text"] + "\n", "label": int(spam)})  # SMS Spam's texts end with a newline
    return rows


def _mnist_rows(n: int, seed: int) -> list[dict]:
    import numpy as np
    from PIL import Image

    from dpo_lab.tasks.digits import load_sklearn_digits, to_unit_range

    images, labels = load_sklearn_digits()
    rng = np.random.default_rng(seed)
    # n / 10 of every digit, in a shuffled order (every class appears in any sizeable split, as in MNIST)
    chosen = np.concatenate([rng.permutation(np.flatnonzero(labels.numpy() == d))[:n // 10] for d in range(10)])
    rows = []
    for i in rng.permutation(chosen):
        pixels = (to_unit_range(images[i])[0].numpy() * 255).astype(np.uint8)
        big = Image.fromarray(pixels, mode="L").resize((20, 20), Image.BILINEAR)
        canvas = Image.new("L", (28, 28))
        canvas.paste(big, (4, 4))
        rows.append({"image": canvas, "label": int(labels[i])})
    return rows


# --- the whole Hub --------------------------------------------------------------------------

def build(home: str | Path) -> Path:
    """Build the stand-in Hub under ``home`` (``HF_HOME``); returns ``home``."""
    import datasets
    import torch

    home = Path(home)
    hub, cache = home / "hub", home / "datasets"
    texts = _corpus()
    torch.set_num_threads(1)

    gpt2_tok = _gpt2_tokenizer(texts, vocab_size=700)
    gpt2 = _gpt2(gpt2_tok)
    _model_repo(hub, "gpt2", lambda f: (gpt2.save_pretrained(f), gpt2_tok.save_pretrained(f)))
    dtok, dmodel = _distilbert_imdb(texts)
    _model_repo(hub, "lvwerra/distilbert-imdb", lambda f: (dmodel.save_pretrained(f), dtok.save_pretrained(f)))
    rtok, rmodel = _deberta_reward_model(texts)
    _model_repo(hub, "OpenAssistant/reward-model-deberta-v3-large-v2",
                lambda f: (rmodel.save_pretrained(f), rtok.save_pretrained(f)))

    mbpp = {"train": mbpp_rows(601, 48, 1), "test": mbpp_rows(11, 30, 2), "validation": mbpp_rows(511, 12, 3),
            "prompt": mbpp_rows(1, 10, 4)}
    ctok, cmodel = _code_model(mbpp["train"] + mbpp["validation"] + mbpp["prompt"] + mbpp["test"])
    _model_repo(hub, "codeparrot/codeparrot-small", lambda f: (cmodel.save_pretrained(f), ctok.save_pretrained(f)))

    V, F = datasets.Value, datasets.Features
    _prepared_dataset(cache, "stanfordnlp/imdb", "plain_text",
                      {"train": _imdb_rows(120, 1), "test": _imdb_rows(120, 2),
                       "unsupervised": [{"text": r["text"], "label": -1} for r in _imdb_rows(20, 3)]},
                      F({"text": V("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}))
    _prepared_dataset(cache, "trl-lib/tldr", "default",
                      {"train": _tldr_rows(240, 1), "validation": _tldr_rows(40, 2), "test": _tldr_rows(40, 3)},
                      F({"prompt": V("string"), "completion": V("string")}))
    _prepared_dataset(cache, "trl-lib/tldr-preference", "default",
                      {"train": _tldr_preference_rows(240, 4), "validation": _tldr_preference_rows(40, 5)},
                      F({"prompt": V("string"), "chosen": V("string"), "rejected": V("string")}))
    _prepared_dataset(cache, "google-research-datasets/mbpp", "full", mbpp,
                      F({"task_id": V("int32"), "text": V("string"), "code": V("string"),
                         "test_list": datasets.Sequence(V("string")), "test_setup_code": V("string"),
                         "challenge_test_list": datasets.Sequence(V("string"))}))
    _prepared_dataset(cache, "ucirvine/sms_spam", "plain_text", {"train": _sms_rows(200, 1)},
                      F({"sms": V("string"), "label": datasets.ClassLabel(names=["ham", "spam"])}))
    _prepared_dataset(cache, "ylecun/mnist", "mnist", {"train": _mnist_rows(1000, 1), "test": _mnist_rows(200, 2)},
                      F({"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(d) for d in range(10)])}))
    (home / "standin.json").write_text(json.dumps({"version": VERSION, "models": MODELS, "datasets": DATASETS}))
    return home


def offline_env(home: str | Path) -> dict:
    """The environment that points ``transformers`` and ``datasets`` at the stand-in Hub, offline."""
    home = str(home)
    return {"HF_HOME": home, "HF_HUB_CACHE": str(Path(home) / "hub"), "HF_DATASETS_CACHE": str(Path(home) / "datasets"),
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1"}


def default_home() -> Path:
    """Where CI keeps the built Hub: ``$DPO_LAB_STANDIN_HUB``, else a folder in the user's cache,
    named by :data:`VERSION` and a digest of this file (a changed builder builds afresh)."""
    if os.environ.get("DPO_LAB_STANDIN_HUB"):
        return Path(os.environ["DPO_LAB_STANDIN_HUB"])
    digest = hashlib.sha1(Path(__file__).read_bytes()).hexdigest()[:10]
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "dpo_lab" / f"standin-hub-v{VERSION}-{digest}"


def ensure_built(home: Path | None = None) -> Path:
    """Build the stand-in Hub once (under a file lock: safe for parallel test workers) and return it.

    The build runs in a subprocess, so this process's ``datasets``/``huggingface_hub``
    settings are untouched; it is written to a ``.partial`` folder renamed into place.
    """
    import subprocess

    from dpo_lab.cache import file_lock

    home = Path(home or default_home())
    with file_lock(home.parent / f"{home.name}.lock"):
        if (home / "standin.json").exists():
            return home
        partial = home.parent / f"{home.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        repo = Path(__file__).resolve().parent.parent
        env = {**os.environ, "PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               **offline_env(partial)}
        subprocess.run([sys.executable, "-m", "tests.standin_hub", str(partial)], cwd=repo, env=env, check=True)
        os.replace(partial, home)
    return home


if __name__ == "__main__":
    print(f"stand-in Hub built in {build(sys.argv[1])}")
