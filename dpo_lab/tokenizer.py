"""The course's own small tokenizer, so the tiny profile downloads nothing.

A byte-level BPE (the GPT-2 scheme: any text can be encoded, since every byte is
in the alphabet) with a small vocabulary, trained on the data files named in
:data:`TOKENIZER_SOURCES` plus a short built-in seed text of English and Python. It is saved in
Hugging Face format in ``data/tokenizer`` (an installed wheel carries it as
``dpo_lab/_data/tokenizer``; :mod:`dpo_lab.paths` finds either) so that
``transformers.AutoTokenizer.from_pretrained("data/tokenizer")`` loads it.

Rebuild it, bit for bit, with::

    python -m dpo_lab.tokenizer            # writes data/tokenizer
    python -m dpo_lab.tokenizer --check    # rebuilds in a temp dir and compares

The full profile loads the Hub's GPT-2 tokenizer through the same call,
:func:`load_tokenizer`.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import sys
import tempfile
from pathlib import Path

from dpo_lab.paths import data_dir

VOCAB_SIZE = 2048
EOS = "<|endoftext|>"
PAD = "<|pad|>"
DATA_DIR = data_dir()  # data/ of a checkout, or its copy in an installed package
TOKENIZER_DIR = DATA_DIR / "tokenizer"

# A little English and Python so that common words and code tokens get merges even
# before a task ships its data; everything else falls back to bytes.
SEED_TEXT = """
The film was good and the story was bad. This movie is great, wonderful, terrible, boring,
fun, dull, brilliant, awful, moving, funny, slow, beautiful, weak, strong, best, worst.
I loved it. I hated it. The acting, the plot, the music, the ending, the director, the cast.
Summary: the report says that the company will open a new office in the city next year.
Please review this message. Your account has been suspended. Click the link to verify.
Hi, are we still meeting for lunch tomorrow? Thanks for the update. FLAG ALLOW spam scam.
def add(a, b):
    return a + b

def count_even(numbers):
    total = 0
    for n in numbers:
        if n % 2 == 0:
            total += 1
    return total

assert add(1, 2) == 3
print(len([1, 2, 3]), max(x, y), min(x, y), sum(values), sorted(items), range(10))
class Node:
    def __init__(self, value):
        self.value = value
while i < n: i = i + 1
if x is None or not y: return False
else: return True
"""


# The files the tokenizer was trained on. A fixed list, not "every file in data/": a notebook that
# adds data must not silently change the tokenizer (and so every other notebook's numbers).
# To widen the tokenizer, add a file here, rebuild, and rerun the notebooks.
TOKENIZER_SOURCES = ("sample_preferences.jsonl", "sentiment_reviews.jsonl")


def tokenizer_corpus(data_dir: Path = DATA_DIR) -> list[str]:
    """All string values of the :data:`TOKENIZER_SOURCES` files in ``data_dir``, plus the seed text."""
    texts = [SEED_TEXT]
    for path in (data_dir / name for name in TOKENIZER_SOURCES):
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    obj = json.loads(line)
                    texts.extend(str(v) for v in obj.values() if isinstance(v, str))
    return texts


def build_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE):
    """Train a byte-level BPE on ``texts`` and wrap it as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=EOS, bos_token=EOS, unk_token=EOS, pad_token=PAD,
        model_max_length=1024,
    )


def save_course_tokenizer(out_dir: Path = TOKENIZER_DIR, data_dir: Path = DATA_DIR) -> Path:
    """Train on :func:`tokenizer_corpus` and save in Hugging Face format to ``out_dir``."""
    tok = build_tokenizer(tokenizer_corpus(data_dir))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out_dir))
    return out_dir


def load_tokenizer(name_or_path: str | Path = TOKENIZER_DIR):
    """Load a tokenizer: the course's (``"course"``, the default) or a Hub one such as ``"gpt2"``.

    GPT-2 has no padding token; we pad with EOS there, which is safe because every
    function in the course finds padding through the attention mask, never by token id.
    """
    from transformers import AutoTokenizer

    if str(name_or_path) == "course":
        name_or_path = TOKENIZER_DIR
    tok = AutoTokenizer.from_pretrained(str(name_or_path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _same_dirs(a: Path, b: Path) -> list[str]:
    """Names of files that differ (or exist on one side only) between two folders."""
    cmp = filecmp.dircmp(a, b)
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return sorted(mismatch + errors + cmp.left_only + cmp.right_only)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="rebuild in a temp dir and compare")
    args = parser.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            save_course_tokenizer(Path(tmp))
            diff = _same_dirs(TOKENIZER_DIR, Path(tmp))
        print("tokenizer is up to date" if not diff else f"tokenizer differs in: {diff}")
        return 1 if diff else 0
    print(f"wrote {save_course_tokenizer()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
