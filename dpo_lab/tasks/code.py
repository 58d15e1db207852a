"""Code synthesis judged by unit tests: the task family of notebook 04.

A policy reads a specification (a signature and a one-line docstring) and writes the
function's body; hidden assert-style unit tests, run in :mod:`dpo_lab.sandbox`, judge it.
Execution gives preferences for free: a program that passes its tests is preferred to
one that fails (the recipe of code-DPO work such as CodeDPO / PLUM, 2024).

Two sources, one schema (a task is a dict with ``task_id``, ``prompt``, ``tests``,
``reference`` and, for generated tasks, ``bugs``):

* ``tiny``: :func:`generate_tasks`, a seeded generator of small functions from
  :data:`TEMPLATES` (shipped as ``data/code_tasks.jsonl``). Each template has a parameter
  ``k``; a seeded choice of two ``k`` values a template is held out, so the evaluation
  asks for functions the SFT data never showed (same templates, unseen parameters).
  :func:`sft_corpus` mixes the correct body with plausibly buggy ones (off-by-one,
  wrong operator, wrong builtin), so a model trained on it is right only part of the time.
* ``full``: MBPP (Austin et al., 2021, ``google-research-datasets/mbpp``) from the Hub,
  mapped by :func:`mbpp_to_task` (its ``test_list`` asserts run in the sandbox).

Gold reward: the pass rate, tests passed / tests (:func:`judge`); a program is correct
when it passes them all. pass@k is the unbiased estimator of Chen et al. (2021), :func:`pass_at_k`.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np

from dpo_lab.paths import data_path
from dpo_lab.sandbox import run_many

DATA_PATH = data_path("code_tasks.jsonl")  # shipped with the package (dpo_lab.paths)
GENERATOR_VERSION = 1  # bump when the generator changes; part of any cache key
K_VALUES = range(2, 10)  # the parameter of every template
HELD_OUT_PER_TEMPLATE = 2

# name(args), docstring with {k}, correct body, buggy bodies (kind, body), a reference
# implementation (trusted: used only here, to write the expected values into the tests),
# and the test inputs. Bodies use {k}, {k1} = k + 1 and {k0} = k - 1.
TEMPLATES = {
    "add": dict(signature="add(x)", doc="Return x plus {k}.", body="return x + {k}",
                bugs=[("wrong operator", "return x - {k}"), ("off-by-one", "return x + {k1}")],
                fn=lambda k: lambda x: x + k, inputs=[1, 5, -3]),
    "scale": dict(signature="scale(x)", doc="Return x times {k}.", body="return x * {k}",
                  bugs=[("wrong operator", "return x + {k}"), ("wrong operator", "return x ** {k}")],
                  fn=lambda k: lambda x: x * k, inputs=[3, 5, -1]),
    "head": dict(signature="head(xs)", doc="Return the first {k} items of xs.", body="return xs[:{k}]",
                 bugs=[("off-by-one", "return xs[:{k1}]"), ("wrong slice", "return xs[{k}:]")],
                 fn=lambda k: lambda xs: xs[:k], inputs="lists"),
    "count_above": dict(signature="count_above(xs)", doc="Return how many items of xs are above {k}.",
                        body="return len([v for v in xs if v > {k}])",
                        bugs=[("off-by-one", "return len([v for v in xs if v >= {k}])"),
                              ("wrong operator", "return len([v for v in xs if v < {k}])")],
                        fn=lambda k: lambda xs: len([v for v in xs if v > k]), inputs="lists"),
    "biggest": dict(signature="biggest(xs)", doc="Return the largest item of xs plus {k}.",
                    body="return max(xs) + {k}",
                    bugs=[("wrong builtin", "return min(xs) + {k}"), ("wrong builtin", "return sum(xs) + {k}")],
                    fn=lambda k: lambda xs: max(xs) + k, inputs="lists"),
    "sum_first": dict(signature="sum_first(xs)", doc="Return the sum of the first {k} items of xs.",
                      body="return sum(xs[:{k}])",
                      bugs=[("off-by-one", "return sum(xs[:{k0}])"), ("wrong builtin", "return max(xs[:{k}])")],
                      fn=lambda k: lambda xs: sum(xs[:k]), inputs="lists"),
    "is_multiple": dict(signature="is_multiple(x)", doc="Return True if x is a multiple of {k}.",
                        body="return x % {k} == 0",
                        bugs=[("wrong operator", "return x // {k} == 0"), ("wrong operator", "return x % {k} != 0")],
                        fn=lambda k: lambda x: x % k == 0, inputs="multiples"),
}


def _fill(text: str, k: int) -> str:
    return text.format(k=k, k1=k + 1, k0=k - 1)


def make_prompt(signature: str, doc: str) -> str:
    """The prompt: signature and docstring; the completion starts with the body's newline."""
    return f'def {signature}:\n    """{doc}"""'


def _test_inputs(kind, k: int, rng: random.Random) -> list:
    if kind == "lists":  # long enough that slicing bugs show, values around every k
        return [[rng.randint(1, 12) for _ in range(12)] for _ in range(3)]
    if kind == "multiples":  # one multiple, one not, one other multiple
        return [k * rng.randint(2, 6), k * rng.randint(2, 6) + 1, 0]
    return list(kind)


def generate_tasks(seed: int = 0) -> list[dict]:
    """Every (template, k) task, its hidden tests, reference body, buggy bodies and split.

    Deterministic in ``seed``: the test inputs and the held-out ``k`` values come from one
    ``random.Random(seed)``. Tests are literal asserts (``assert add(1) == 4``) whose
    expected values come from the template's trusted implementation.
    """
    rng = random.Random(seed)
    tasks = []
    for name, t in TEMPLATES.items():
        held_out = set(rng.sample(list(K_VALUES), HELD_OUT_PER_TEMPLATE))
        for k in K_VALUES:
            fn = t["fn"](k)
            tests = [f"assert {name}({x!r}) == {fn(x)!r}" for x in _test_inputs(t["inputs"], k, rng)]
            tasks.append({
                "task_id": f"{name}_{k}", "template": name, "k": k,
                "split": "heldout" if k in held_out else "train",
                "prompt": make_prompt(t["signature"], _fill(t["doc"], k)),
                "reference": "\n    " + _fill(t["body"], k),
                "bugs": [{"kind": kind, "completion": "\n    " + _fill(body, k)} for kind, body in t["bugs"]],
                "tests": tests,
            })
    return tasks


def write_tasks(path: str | Path = DATA_PATH, seed: int = 0) -> Path:
    """Write :func:`generate_tasks` as JSONL (keys sorted, one task a line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for task in generate_tasks(seed):
            f.write(json.dumps(task, sort_keys=True) + "\n")
    return path


def load_tasks(path: str | Path = DATA_PATH) -> list[dict]:
    """Read tasks from JSONL; a line missing a field is an error naming the file and line."""
    path = Path(path)
    tasks = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        task = json.loads(line)
        for field in ("task_id", "prompt", "tests", "reference"):
            if field not in task:
                raise ValueError(f"{path}:{line_no}: task is missing the field {field!r}")
        tasks.append(task)
    return tasks


def sft_corpus(tasks: list[dict], per_task: int = 24, p_correct: float = 0.5, seed: int = 0) -> list[dict]:
    """``per_task`` (prompt, completion) examples a task: correct with probability ``p_correct``,
    else one of the task's bugs, uniformly. Rows carry ``task_id`` and ``kind`` ("correct" or the bug).

    A model fit to this corpus writes a correct program about ``p_correct`` of the time: the
    imperfect SFT model that preference optimisation starts from. A task without bugs (MBPP)
    gives its reference solution once: a pretrained code model is imperfect on its own.
    """
    if not tasks:
        raise ValueError("sft_corpus: the list of tasks is empty")
    rng = random.Random(seed)
    rows = []
    for task in tasks:
        if not task.get("bugs"):
            rows.append({"task_id": task["task_id"], "prompt": task["prompt"], "completion": task["reference"],
                         "kind": "correct"})
            continue
        for _ in range(per_task):
            if rng.random() < p_correct:
                kind, completion = "correct", task["reference"]
            else:
                bug = rng.choice(task["bugs"])
                kind, completion = bug["kind"], bug["completion"]
            rows.append({"task_id": task["task_id"], "prompt": task["prompt"], "completion": completion, "kind": kind})
    return rows


# --- stop sequences: where a completion ends ------------------------------------------
#: a completion ends where a new top-level statement starts (the HumanEval/Codex convention):
#: another function, a class, a test or a print after the function is not part of it
STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\nassert ", '\n"""', "\n#")


def cut_at_stop(text: str, stops=STOP_SEQUENCES) -> str:
    """``text`` up to the first stop sequence (the whole text when none occurs).

    A generated-task completion is a function body (indented lines), so no stop sequence
    cuts it; an MBPP completion is a whole function and is cut before whatever follows it.
    """
    ends = [text.find(s, 1) for s in stops]
    ends = [e for e in ends if e > 0]
    return text[:min(ends)] if ends else text


# --- judging: the sandbox is the only place generated code runs ----------------------

def program_of(task: dict, completion: str) -> str:
    """The program the sandbox runs: prompt + completion (+ MBPP's ``test_setup_code``)."""
    setup = task.get("setup", "")
    return (setup + "\n" if setup else "") + task["prompt"] + completion + "\n"


def judge(tasks: list[dict], completions: list[str], *, cache: dict | None = None, workers: int = 2,
          timeout: float = 2.0, progress: bool = False) -> list:
    """Run each ``completions[i]`` for ``tasks[i]`` against its tests in the sandbox.

    Returns one :class:`dpo_lab.sandbox.SandboxResult` each. ``cache`` (a dict, keyed by
    task id and completion) skips programs already judged: a small model repeats itself,
    and the verdict of a deterministic program does not change.
    """
    if len(tasks) != len(completions):
        raise ValueError(f"judge: {len(tasks)} tasks but {len(completions)} completions")
    cache = {} if cache is None else cache
    keys = [(t["task_id"], c) for t, c in zip(tasks, completions)]
    todo = list(dict.fromkeys(key for key in keys if key not in cache))
    by_id = {t["task_id"]: t for t in tasks}
    jobs = [(program_of(by_id[tid], c), by_id[tid]["tests"]) for tid, c in todo]
    for key, result in zip(todo, run_many(jobs, workers=workers, timeout=timeout, progress=progress)):
        cache[key] = result
    return [cache[key] for key in keys]


class PassRateReward:
    """The gold reward as a callable ``texts -> array`` (for RLOO and best-of-N).

    A text is prompt + completion; its task is found by its prompt. Every result it
    produced is kept in ``results`` so a notebook can check that all came from the sandbox.
    """

    def __init__(self, tasks: list[dict], cache: dict | None = None, workers: int = 2, timeout: float = 2.0,
                 stops=()):
        self.by_prompt = {t["prompt"]: t for t in tasks}
        self.stops = tuple(stops)  # a completion is cut at these (:func:`cut_at_stop`) before it runs
        self.cache = {} if cache is None else cache
        self.workers, self.timeout = workers, timeout
        self.results: list = []
        self.name = "pass_rate"

    def split(self, text: str) -> tuple[dict, str]:
        end = text.find('"""', text.find('"""') + 3) + 3  # the prompt ends with the docstring
        prompt = text[:end]
        if end < 3 or prompt not in self.by_prompt:
            raise ValueError(f"PassRateReward: no task has the prompt of {text[:60]!r}")
        return self.by_prompt[prompt], text[end:]

    def __call__(self, texts: list[str]) -> np.ndarray:
        tasks, completions = zip(*(self.split(t) for t in texts)) if texts else ((), ())
        if self.stops:
            completions = [cut_at_stop(c, self.stops) for c in completions]
        results = judge(list(tasks), list(completions), cache=self.cache, workers=self.workers, timeout=self.timeout)
        self.results += results
        return np.array([r.pass_rate for r in results])


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (Chen et al., 2021, eq. 1).

    pass@k = 1 - C(n - c, k) / C(n, k): the chance that k samples drawn without replacement
    from the n include a correct one; computed as 1 - prod_{i=n-c+1}^{n} (1 - k / i) for stability.
    """
    if not (0 <= c <= n) or not (1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(correct: np.ndarray, k: int) -> float:
    """Mean over tasks of :func:`pass_at_k`; ``correct`` is a (tasks, n) boolean array."""
    correct = np.asarray(correct, dtype=bool)
    n = correct.shape[1]
    return float(np.mean([pass_at_k(n, int(row.sum()), k) for row in correct]))


def execution_pairs(tasks: list[dict], completions: list[str], pass_rates: np.ndarray, max_per_task: int = 8,
                    seed: int = 0, allow_empty: bool = False) -> list[dict]:
    """Preference pairs from execution: for each task, a program with a higher pass rate is
    chosen over one with a lower rate (a passing program over a failing one, or more tests
    over fewer); distinct texts only, at most ``max_per_task`` pairs a task, seeded.

    No pair at all (a policy that passes nothing, or everything) is an error that says so,
    unless ``allow_empty``: training on nothing would be no experiment.
    """
    rng = random.Random(seed)
    groups: dict[str, list[tuple[str, float]]] = {}
    by_id = {}
    for task, completion, rate in zip(tasks, completions, pass_rates):
        by_id[task["task_id"]] = task
        group = groups.setdefault(task["task_id"], [])
        if completion not in [c for c, _ in group]:
            group.append((completion, float(rate)))
    pairs = []
    for tid, group in groups.items():
        options = [(a, b) for a in group for b in group if a[1] > b[1]]
        rng.shuffle(options)
        for (chosen, rc), (rejected, rr) in options[:max_per_task]:
            pairs.append({"prompt": by_id[tid]["prompt"], "chosen": chosen, "rejected": rejected,
                          "task_id": tid, "chosen_pass_rate": rc, "rejected_pass_rate": rr})
    if not pairs and not allow_empty:
        rates = np.asarray(pass_rates, dtype=float)
        raise ValueError(f"no execution pairs: in {len(groups)} tasks no two distinct programs differ in pass rate "
                         f"({len(rates)} samples, {int((rates == 1).sum())} pass all tests, "
                         f"{int((rates == 0).sum())} pass none); sample more, at a higher temperature, or start "
                         "from a stronger SFT model")
    return pairs


# --- full profile: MBPP from the Hub, mapped to the same schema -----------------------

MBPP_FIELDS = ("task_id", "text", "code", "test_list")


def mbpp_to_task(record: dict, where: str = "MBPP") -> dict:
    """One MBPP record (``text``, ``code``, ``test_list``, ``test_setup_code``...) as a task.

    The prompt is a module docstring with the problem and its first test (the usual MBPP
    prompt: the test shows the function's name and signature); the reference completion is
    MBPP's ``code``; every assert of ``test_list`` (and ``challenge_test_list``) is a hidden test.
    """
    for field in MBPP_FIELDS:
        if field not in record:
            raise ValueError(f"{where}: record is missing the MBPP field {field!r}")
    tests = list(record["test_list"]) + list(record.get("challenge_test_list") or [])
    if not tests or not all(isinstance(t, str) for t in tests):
        raise ValueError(f"{where}: test_list must be a non-empty list of strings")
    text = re.sub(r"\s+", " ", record["text"]).strip()
    return {"task_id": f"mbpp_{record['task_id']}", "template": "mbpp", "split": "heldout",
            "prompt": f'"""{text}\n{tests[0]}\n"""', "reference": "\n" + record["code"].replace("\r\n", "\n"),
            "tests": tests, "setup": record.get("test_setup_code") or "", "bugs": []}


def load_mbpp(source: str = "google-research-datasets/mbpp", split: str = "test", config: str = "full",
              limit: int | None = None, seed: int = 0) -> list[dict]:
    """MBPP tasks from the Hub (``source`` a dataset id) or a local JSONL/Parquet file in its schema.

    ``split`` may join splits (``"train+validation"``: the tasks notebook 04 builds pairs on;
    ``"test"``: the ones it evaluates on). The split is shuffled with ``seed`` before ``limit``
    takes a prefix; each task's ``split`` field says which side it is on.
    """
    from dpo_lab.data import open_dataset

    dataset = open_dataset(source, split, config)
    dataset = dataset.shuffle(seed=seed)
    records = dataset.select(range(min(limit, len(dataset)))) if limit else dataset
    if len(records) == 0:
        raise ValueError(f"no MBPP tasks: {source} [{split}] gave 0 rows (limit={limit})")
    side = "heldout" if split == "test" else "train"
    return [{**mbpp_to_task(dict(r), where=f"{source}[{i}]"), "split": side} for i, r in enumerate(records)]


if __name__ == "__main__":
    # python -m dpo_lab.tasks.code   rebuilds data/code_tasks.jsonl
    print(f"wrote {write_tasks()}")
