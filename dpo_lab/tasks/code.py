"""Code synthesis judged by unit tests: the task family of notebook 04.

A policy reads a specification (a signature and a one-line docstring) and writes the
function's body; hidden assert-style unit tests, run in :mod:`dpo_lab.sandbox`, judge it.
Execution gives preferences for free: a program that passes its tests is preferred to
one that fails (the recipe of code-DPO work such as CodeDPO / PLUM, 2024).

Two sources, one schema (a task is a dict with ``task_id``, ``prompt``, ``tests``,
``reference`` and, for generated tasks, ``bugs``, ``split`` and ``seen_template``):

* ``tiny``: :func:`generate_tasks`, a seeded generator of small functions from
  :data:`TEMPLATES` (shipped as ``data/code_tasks.jsonl``). Each template has a parameter
  ``k`` from 2 to 9. Three splits: ``train`` (SFT and preference pairs), ``validation``
  (where hyper-parameters are chosen) and ``heldout`` (the test tasks of the headline).
  A template of :data:`TEMPLATES` gives four ``k`` to training, two to validation and two
  to the held-out set (a seeded choice); a template of :data:`HELDOUT_TEMPLATES` never
  appears in training or validation: all its ``k`` are held out (``seen_template`` False).
  Those are new combinations of pieces training shows ("the sum of the last k items":
  training has "the sum of the first k items" and "the last k items").
  Some bodies are one line, some are loops with an edge case; the buggy variants
  (:func:`sft_corpus` mixes them into the SFT data) are one-token slips (off-by-one, wrong
  operator) and larger mistakes (wrong loop bounds, a missing edge case, a wrong data
  structure), measured by :func:`token_edit_size`.
* ``full``: MBPP (Austin et al., 2021, ``google-research-datasets/mbpp``) from the Hub,
  mapped by :func:`mbpp_to_task` (its ``test_list`` asserts run in the sandbox).

Gold reward: the pass rate, tests passed / tests (:func:`judge`); a program is correct
when it passes them all. pass@k is the unbiased estimator of Chen et al. (2021), :func:`pass_at_k`.
"""

from __future__ import annotations

import difflib
import json
import random
import re
from pathlib import Path

import numpy as np

from dpo_lab.paths import data_path
from dpo_lab.sandbox import run_many

DATA_PATH = data_path("code_tasks.jsonl")  # shipped with the package (dpo_lab.paths)
GENERATOR_VERSION = 2  # bump when the generator changes; part of any cache key
K_VALUES = range(2, 10)  # the parameter of every template
HELD_OUT_PER_TEMPLATE = 2  # k values of a training template kept for the held-out set
VALIDATION_PER_TEMPLATE = 2  # and for the validation set
SPLITS = ("train", "validation", "heldout")


# --- test inputs: each template's inputs make every one of its bugs fail a test ----------

def _lists(k, rng, n=3, length=12):
    """``n`` random lists of ints 1..12: slicing and counting bugs show on them."""
    return [[rng.randint(1, 12) for _ in range(length)] for _ in range(n)]


def _odd_lists(k, rng):
    """Lists of odd length (11, 13, 15): ``xs[k:]`` never equals ``xs[-k:]`` on them."""
    return [[rng.randint(1, 12) for _ in range(length)] for length in (11, 13, 15)]


def _multiples(k, rng):
    """One multiple of k, one not, and 0."""
    return [k * rng.randint(2, 6), k * rng.randint(2, 6) + 1, 0]


def _with(rng, xs, *values):
    """``xs`` with ``values`` put at random distinct places (a seeded shuffle of the places)."""
    xs = list(xs)
    for place, value in zip(rng.sample(range(len(xs)), len(values)), values):
        xs[place] = value
    return xs


def _small_ends(k, rng):
    """Lists whose first and last items are below k and one item equals k: loop-bound and
    off-by-one bugs of a sum over the items below k show."""
    out = []
    for _ in range(3):
        xs = _with(rng, [rng.randint(1, 12) for _ in range(8)], k)
        xs[0], xs[-1] = rng.randint(1, k - 1), rng.randint(1, k - 1)
        out.append(xs)
    return out


def _big_ends(k, rng):
    """Lists whose first and last items are above k and one item equals k."""
    out = []
    for _ in range(3):
        xs = _with(rng, [rng.randint(1, 12) for _ in range(8)], k)
        xs[0], xs[-1] = rng.randint(k + 1, 12), rng.randint(k + 1, 12)
        out.append(xs)
    return out


def _find_cases(k, rng):
    """k inside (not at index k), k last, k absent: the three ways a search goes wrong."""
    def others(n):
        return [rng.choice([v for v in range(1, 13) if v != k]) for _ in range(n)]
    inside = others(8)
    inside[rng.choice([i for i in range(1, 7) if i != k])] = k
    last = others(8)
    last[-1] = k
    return [inside, last, others(8)]


def _empty_and_lists(k, rng):
    """The empty list, then two lists without k (so their largest item is not k)."""
    return [[]] + [[rng.choice([v for v in range(1, 13) if v != k]) for _ in range(6)] for _ in range(2)]


def _repeats_above(k, rng):
    """Lists with a repeated item above k and an item equal to k."""
    out = []
    for _ in range(3):
        big = rng.randint(k + 1, 12)
        out.append(_with(rng, [rng.randint(1, 12) for _ in range(10)], big, big, k))
    return out


def _repeats_below(k, rng):
    """Lists with a repeated item below k and an item equal to k."""
    out = []
    for _ in range(3):
        small = rng.randint(1, k - 1)
        out.append(_with(rng, [rng.randint(1, 12) for _ in range(10)], small, small, k))
    return out


def _peak_after(k, rng):
    """Lists whose largest item (12, once) sits at index k, just after the first k items."""
    out = []
    for _ in range(3):
        xs = [rng.randint(1, 11) for _ in range(12)]
        xs[k] = 12
        out.append(xs)
    return out


# --- the templates ---------------------------------------------------------------------
# name(args), docstring with {k}, correct body, buggy bodies (kind, body), a reference
# implementation (trusted: used only here, to write the expected values into the tests),
# and the test inputs (a function of k and the generator). Bodies use {k}, {k1} = k + 1 and
# {k0} = k - 1; a body of several lines is indented by 4 spaces a level, from 0.

_SUM_LOOP = "total = 0\nfor v in xs{bounds}:\n    if v {op} {k}:\n        total += v\nreturn total"


def _sum_loop(op, bounds=""):
    return _SUM_LOOP.replace("{op}", op).replace("{bounds}", bounds)


#: templates of the training set: four k each for training, two for validation, two held out
TEMPLATES = {
    "add": dict(signature="add(x)", doc="Return x plus {k}.", body="return x + {k}",
                bugs=[("wrong operator", "return x - {k}"), ("off-by-one", "return x + {k1}")],
                fn=lambda k: lambda x: x + k, inputs=lambda k, rng: [1, 5, -3]),
    "scale": dict(signature="scale(x)", doc="Return x times {k}.", body="return x * {k}",
                  bugs=[("wrong operator", "return x + {k}"), ("wrong operator", "return x ** {k}")],
                  fn=lambda k: lambda x: x * k, inputs=lambda k, rng: [3, 5, -1]),
    "is_multiple": dict(signature="is_multiple(x)", doc="Return True if x is a multiple of {k}.",
                        body="return x % {k} == 0",
                        bugs=[("wrong operator", "return x // {k} == 0"), ("wrong operator", "return x % {k} != 0")],
                        fn=lambda k: lambda x: x % k == 0, inputs=_multiples),
    "head": dict(signature="head(xs)", doc="Return the first {k} items of xs.", body="return xs[:{k}]",
                 bugs=[("off-by-one", "return xs[:{k1}]"), ("wrong slice", "return xs[{k}:]")],
                 fn=lambda k: lambda xs: xs[:k], inputs=_lists),
    "last_items": dict(signature="last_items(xs)", doc="Return the last {k} items of xs.", body="return xs[-{k}:]",
                       bugs=[("wrong slice", "return xs[{k}:]"), ("off-by-one", "return xs[-{k1}:]"),
                             ("wrong slice", "return xs[:-{k}]")],
                       fn=lambda k: lambda xs: xs[-k:], inputs=_odd_lists),
    "sum_first": dict(signature="sum_first(xs)", doc="Return the sum of the first {k} items of xs.",
                      body="return sum(xs[:{k}])",
                      bugs=[("off-by-one", "return sum(xs[:{k0}])"), ("wrong builtin", "return max(xs[:{k}])")],
                      fn=lambda k: lambda xs: sum(xs[:k]), inputs=_lists),
    "count_above": dict(signature="count_above(xs)", doc="Return how many items of xs are above {k}.",
                        body="return len([v for v in xs if v > {k}])",
                        bugs=[("off-by-one", "return len([v for v in xs if v >= {k}])"),
                              ("wrong operator", "return len([v for v in xs if v < {k}])")],
                        fn=lambda k: lambda xs: len([v for v in xs if v > k]), inputs=_lists),
    "count_new": dict(signature="count_new(xs)", doc="Return how many different values of xs are above {k}.",
                      body="return len(set([v for v in xs if v > {k}]))",
                      bugs=[("wrong data structure", "return len([v for v in xs if v > {k}])"),
                            ("missing filter", "return len(set(xs))"),
                            ("off-by-one", "return len(set([v for v in xs if v >= {k}]))")],
                      fn=lambda k: lambda xs: len({v for v in xs if v > k}), inputs=_repeats_above),
    "sum_small": dict(signature="sum_small(xs)", doc="Return the sum of the items of xs that are less than {k}.",
                      body=_sum_loop("<"),
                      bugs=[("wrong loop bounds", _sum_loop("<", "[1:]")),
                            ("wrong loop bounds", _sum_loop("<", "[:-1]")),
                            ("off-by-one", _sum_loop("<="))],
                      fn=lambda k: lambda xs: sum(v for v in xs if v < k), inputs=_small_ends),
    "biggest": dict(signature="biggest(xs)", doc="Return the largest item of xs plus {k}.",
                    body="return max(xs) + {k}",
                    bugs=[("wrong builtin", "return min(xs) + {k}"), ("wrong builtin", "return sum(xs) + {k}")],
                    fn=lambda k: lambda xs: max(xs) + k, inputs=_lists),
    "max_or": dict(signature="max_or(xs)", doc="Return the largest item of xs, or {k} if xs is empty.",
                   body="if not xs:\n    return {k}\nreturn max(xs)",
                   bugs=[("missing edge case", "return max(xs)"),
                         ("wrong condition", "if xs:\n    return {k}\nreturn max(xs)"),
                         ("wrong builtin", "if not xs:\n    return {k}\nreturn min(xs)")],
                   fn=lambda k: lambda xs: max(xs) if xs else k, inputs=_empty_and_lists),
    "find": dict(signature="find(xs)", doc="Return the index of {k} in xs, or -1 if it is not in xs.",
                 body="for i in range(len(xs)):\n    if xs[i] == {k}:\n        return i\nreturn -1",
                 bugs=[("missing edge case", "for i in range(len(xs)):\n    if xs[i] == {k}:\n        return i"),
                       ("wrong loop bounds",
                        "for i in range(len(xs) - 1):\n    if xs[i] == {k}:\n        return i\nreturn -1"),
                       ("wrong value", "for i in range(len(xs)):\n    if xs[i] == {k}:\n        return xs[i]\n"
                                       "return -1")],
                 fn=lambda k: lambda xs: xs.index(k) if k in xs else -1, inputs=_find_cases),
}

#: templates only the held-out set has: new combinations of what training shows
HELDOUT_TEMPLATES = {
    "sum_last": dict(signature="sum_last(xs)", doc="Return the sum of the last {k} items of xs.",
                     body="return sum(xs[-{k}:])",
                     bugs=[("wrong slice", "return sum(xs[{k}:])"), ("missing slice", "return sum(xs)"),
                           ("wrong slice", "return sum(xs[:{k}])")],
                     fn=lambda k: lambda xs: sum(xs[-k:]), inputs=_odd_lists),
    "max_first": dict(signature="max_first(xs)", doc="Return the largest of the first {k} items of xs.",
                      body="return max(xs[:{k}])",
                      bugs=[("off-by-one", "return max(xs[:{k1}])"), ("missing slice", "return max(xs)"),
                            ("wrong slice", "return max(xs[{k}:])")],
                      fn=lambda k: lambda xs: max(xs[:k]), inputs=_peak_after),
    "count_small": dict(signature="count_small(xs)", doc="Return how many items of xs are less than {k}.",
                        body="return len([v for v in xs if v < {k}])",
                        bugs=[("off-by-one", "return len([v for v in xs if v <= {k}])"),
                              ("wrong data structure", "return len(set([v for v in xs if v < {k}]))"),
                              ("wrong operator", "return len([v for v in xs if v > {k}])")],
                        fn=lambda k: lambda xs: len([v for v in xs if v < k]), inputs=_repeats_below),
    "sum_above": dict(signature="sum_above(xs)", doc="Return the sum of the items of xs that are above {k}.",
                      body=_sum_loop(">"),
                      bugs=[("wrong loop bounds", _sum_loop(">", "[1:]")),
                            ("wrong loop bounds", _sum_loop(">", "[:-1]")),
                            ("off-by-one", _sum_loop(">="))],
                      fn=lambda k: lambda xs: sum(v for v in xs if v > k), inputs=_big_ends),
}


def _fill(text: str, k: int) -> str:
    return text.format(k=k, k1=k + 1, k0=k - 1)


def _as_body(text: str, k: int) -> str:
    """A template body as a completion: each line indented by 4 more spaces, after a newline."""
    return "".join("\n    " + line for line in _fill(text, k).split("\n"))


def make_prompt(signature: str, doc: str) -> str:
    """The prompt: signature and docstring; the completion starts with the body's newline."""
    return f'def {signature}:\n    """{doc}"""'


def _split_of(k, held_out, validation) -> str:
    return "heldout" if k in held_out else "validation" if k in validation else "train"


def generate_tasks(seed: int = 0) -> list[dict]:
    """Every (template, k) task: its hidden tests, reference body, buggy bodies and split.

    Deterministic in ``seed``: the test inputs and the choice of held-out and validation
    ``k`` come from one ``random.Random(seed)``. Tests are literal asserts
    (``assert add(1) == 4``) whose expected values come from the template's trusted
    implementation, never from the body the model is shown.
    """
    rng = random.Random(seed)
    tasks = []
    for seen, templates in ((True, TEMPLATES), (False, HELDOUT_TEMPLATES)):
        for name, t in templates.items():
            if seen:
                chosen = rng.sample(list(K_VALUES), HELD_OUT_PER_TEMPLATE + VALIDATION_PER_TEMPLATE)
                held_out, validation = set(chosen[:HELD_OUT_PER_TEMPLATE]), set(chosen[HELD_OUT_PER_TEMPLATE:])
            else:
                held_out, validation = set(K_VALUES), set()
            for k in K_VALUES:
                fn = t["fn"](k)
                tests = [f"assert {name}({x!r}) == {fn(x)!r}" for x in t["inputs"](k, rng)]
                tasks.append({
                    "task_id": f"{name}_{k}", "template": name, "k": k,
                    "split": _split_of(k, held_out, validation), "seen_template": seen,
                    "prompt": make_prompt(t["signature"], _fill(t["doc"], k)),
                    "reference": _as_body(t["body"], k),
                    "bugs": [{"kind": kind, "completion": _as_body(body, k)} for kind, body in t["bugs"]],
                    "tests": tests,
                })
    return tasks


def token_edit_size(a, b) -> int:
    """How many tokens differ between two token sequences: over the opcodes of a minimal
    alignment (:class:`difflib.SequenceMatcher`), each replaced, deleted or inserted run
    counts its longer side. ``x + 3`` -> ``x + 4`` is 1; deleting a line is its length."""
    matcher = difflib.SequenceMatcher(a=list(a), b=list(b), autojunk=False)
    return sum(max(i2 - i1, j2 - j1) for op, i1, i2, j1, j2 in matcher.get_opcodes() if op != "equal")


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
                    seed: int = 0, allow_empty: bool = False, truncated: list[bool] | None = None) -> list[dict]:
    """Preference pairs from execution: for each task, a program with a higher pass rate is
    chosen over one with a lower rate (a passing program over a failing one, or more tests
    over fewer); distinct texts only, at most ``max_per_task`` pairs a task, seeded.

    ``truncated``: one bool a completion, true for a sample cut off by ``max_new_tokens`` (and not
    ended by a stop sequence either); the pairs carry it as ``chosen_truncated`` /
    ``rejected_truncated``, so such a program is trained on without an EOS it never produced.

    No pair at all (a policy that passes nothing, or everything) is an error that says so,
    unless ``allow_empty``: training on nothing would be no experiment.
    """
    rng = random.Random(seed)
    truncated = [False] * len(completions) if truncated is None else truncated
    groups: dict[str, list[tuple[str, float, bool]]] = {}
    by_id = {}
    for task, completion, rate, cut in zip(tasks, completions, pass_rates, truncated):
        by_id[task["task_id"]] = task
        group = groups.setdefault(task["task_id"], [])
        if completion not in [c for c, _, _ in group]:
            group.append((completion, float(rate), bool(cut)))
    pairs = []
    for tid, group in groups.items():
        options = [(a, b) for a in group for b in group if a[1] > b[1]]
        rng.shuffle(options)
        for (chosen, rc, cut_c), (rejected, rr, cut_r) in options[:max_per_task]:
            pairs.append({"prompt": by_id[tid]["prompt"], "chosen": chosen, "rejected": rejected,
                          "task_id": tid, "chosen_pass_rate": rc, "rejected_pass_rate": rr,
                          "chosen_truncated": cut_c, "rejected_truncated": cut_r})
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
    return {"task_id": f"mbpp_{record['task_id']}", "template": "mbpp", "split": "heldout", "seen_template": False,
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
