"""The code-synthesis task of notebook 04: pass@k by hand, the generator, its tests in the sandbox, MBPP."""

import json
import os

import numpy as np
import pytest

from dpo_lab.sandbox import run_many
from dpo_lab.tasks import code


@pytest.mark.parametrize("n, c, k, expected", [
    (5, 2, 1, 0.4),  # pass@1 = c / n
    (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
    (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
    (4, 0, 2, 0.0),  # no correct sample
    (4, 3, 2, 1.0),  # n - c < k: every k-subset holds a correct one
    (4, 4, 4, 1.0),
])
def test_pass_at_k_by_hand(n, c, k, expected):
    assert code.pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_is_not_the_naive_formula():
    # 1 - (1 - c/n)^k = 1 - 0.6^2 = 0.64 is biased low; the estimator gives 0.7
    assert code.pass_at_k(5, 2, 2) == pytest.approx(0.7)


@pytest.mark.parametrize("n, c, k", [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_rejects_bad_counts(n, c, k):
    with pytest.raises(ValueError, match="pass_at_k"):
        code.pass_at_k(n, c, k)


def test_mean_pass_at_k_averages_tasks():
    correct = np.array([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=bool)
    assert code.mean_pass_at_k(correct, 1) == pytest.approx((0.4 + 0.0) / 2)
    assert code.mean_pass_at_k(correct, 2) == pytest.approx((0.7 + 0.0) / 2)


def test_generator_is_deterministic_and_the_file_rebuilds(tmp_path):
    assert code.generate_tasks(0) == code.generate_tasks(0)
    assert code.generate_tasks(0) != code.generate_tasks(1)
    rebuilt = code.write_tasks(tmp_path / "t.jsonl")
    assert rebuilt.read_bytes() == code.DATA_PATH.read_bytes()
    assert code.load_tasks() == code.generate_tasks(0)


def test_splits_meet_the_counts_of_issue_20():
    tasks = code.generate_tasks(0)
    assert len(tasks) == (len(code.TEMPLATES) + len(code.HELDOUT_TEMPLATES)) * len(code.K_VALUES)
    by_split = {s: [t for t in tasks if t["split"] == s] for s in code.SPLITS}
    assert {t["split"] for t in tasks} == set(code.SPLITS)
    assert len(by_split["heldout"]) >= 50
    trained = {t["template"] for t in by_split["train"]}
    validated = {t["template"] for t in by_split["validation"]}
    heldout_only = {t["template"] for t in by_split["heldout"]} - trained - validated
    assert heldout_only == set(code.HELDOUT_TEMPLATES) and len(heldout_only) >= 3
    assert trained == set(code.TEMPLATES)
    for t in tasks:  # seen_template says whether training shows the template
        assert t["seen_template"] == (t["template"] in trained)
    for name in code.TEMPLATES:  # per training template: 4 k train, 2 validation, 2 held out, all distinct
        ks = {s: {t["k"] for t in by_split[s] if t["template"] == name} for s in code.SPLITS}
        assert [len(ks[s]) for s in code.SPLITS] == [4, 2, 2]
        assert set().union(*ks.values()) == set(code.K_VALUES)
    # every k value is seen in training under some template, so held-out tasks need no unseen number
    assert {t["k"] for t in by_split["train"]} == set(code.K_VALUES)
    add_3 = next(t for t in tasks if t["task_id"] == "add_3")
    assert add_3["prompt"] == 'def add(x):\n    """Return x plus 3."""'
    assert add_3["reference"] == "\n    return x + 3"
    assert add_3["tests"] == ["assert add(1) == 4", "assert add(5) == 8", "assert add(-3) == 0"]
    find_4 = next(t for t in tasks if t["task_id"] == "find_4")
    assert find_4["reference"] == ("\n    for i in range(len(xs)):\n        if xs[i] == 4:\n            return i"
                                   "\n    return -1")


@pytest.mark.parametrize("a, b, size", [
    ("x + 3", "x + 4", 1),  # one token replaced
    ("a b c", "a c", 1),  # one deleted
    ("a b c", "a b c d e", 2),  # two inserted
    ("a b c d", "a x y d", 2),  # a run of two replaced
    ("a b c d", "a x c d e f", 3),  # one replaced (1), two inserted (2)
    ("a b c d", "a x d", 2),  # a run of two replaced by one: its longer side
    ("a b", "a b", 0),
])
def test_token_edit_size_by_hand(a, b, size):
    assert code.token_edit_size(a.split(), b.split()) == size


def test_buggy_variants_are_often_more_than_a_one_token_edit():
    from dpo_lab.tokenizer import load_tokenizer

    tok = load_tokenizer()
    tasks = code.generate_tasks(0)
    sizes = {s: [] for s in code.SPLITS}
    for t in tasks:
        ref = tok(t["reference"])["input_ids"]
        for bug in t["bugs"]:
            size = code.token_edit_size(ref, tok(bug["completion"])["input_ids"])
            assert size >= 1, (t["task_id"], bug["kind"])  # a bug differs from the reference
            sizes[t["split"]].append(size)
    every = sum(sizes.values(), [])
    assert np.mean(np.array(every) > 1) >= 0.30
    assert np.mean(np.array(sizes["heldout"]) > 1) >= 0.30
    kinds = {b["kind"] for t in tasks for b in t["bugs"]}
    assert {"wrong loop bounds", "missing edge case", "wrong data structure"} <= kinds


def test_tests_keep_the_assert_call_equals_literal_shape():
    import ast

    for t in code.generate_tasks(0):
        name = t["template"]
        for test in t["tests"]:
            node = ast.parse(test).body[0]
            assert isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare), test
            assert isinstance(node.test.ops[0], ast.Eq) and len(node.test.ops) == 1, test
            call = node.test.left
            assert isinstance(call, ast.Call) and call.func.id == name, test
            ast.literal_eval(node.test.comparators[0])  # the expected value is a literal


def test_references_pass_and_every_bug_fails_a_test_in_the_sandbox():
    tasks = code.generate_tasks(0)
    jobs, labels = [], []
    for t in tasks:
        jobs.append((code.program_of(t, t["reference"]), t["tests"]))
        labels.append((t["task_id"], "reference"))
        for bug in t["bugs"]:
            jobs.append((code.program_of(t, bug["completion"]), t["tests"]))
            labels.append((t["task_id"], bug["kind"]))
    results = run_many(jobs, workers=2, timeout=5.0)
    assert all(r.pid != os.getpid() for r in results)
    assert all(r.unverified == 0 for r in results)  # every verdict is the parent's (assert call == literal)
    for (task_id, kind), r in zip(labels, results):
        if kind == "reference":
            assert r.status == "ok", (task_id, r.error, r.test_errors)
        else:  # a bug runs (it is valid Python) but fails at least one test
            assert r.status == "failed" and r.passed < r.total, (task_id, kind, r.status)


def test_sft_corpus_mixes_correct_and_buggy_programs():
    tasks = [t for t in code.generate_tasks(0) if t["split"] == "train"]
    corpus = code.sft_corpus(tasks, per_task=20, p_correct=0.5, seed=0)
    assert corpus == code.sft_corpus(tasks, per_task=20, p_correct=0.5, seed=0)
    assert len(corpus) == 20 * len(tasks)
    share = np.mean([r["kind"] == "correct" for r in corpus])
    assert 0.45 < share < 0.55
    assert {r["kind"] for r in corpus} == {"correct"} | {b["kind"] for t in tasks for b in t["bugs"]}
    assert {"wrong loop bounds", "missing edge case", "wrong data structure"} <= {r["kind"] for r in corpus}
    by_id = {t["task_id"]: t for t in tasks}
    for r in corpus:
        task = by_id[r["task_id"]]
        allowed = [task["reference"]] + [b["completion"] for b in task["bugs"]]
        assert r["prompt"] == task["prompt"] and r["completion"] in allowed
    assert all(r["kind"] == "correct" for r in code.sft_corpus(tasks[:2], per_task=5, p_correct=1.0))


def test_execution_pairs_by_hand():
    task = {"task_id": "t", "prompt": "P"}
    completions = [" a", " b", " a", " c"]
    rates = [1.0, 0.0, 1.0, 1 / 3]
    pairs = code.execution_pairs([task] * 4, completions, np.array(rates))
    got = {(p["chosen"], p["rejected"]) for p in pairs}
    assert got == {(" a", " b"), (" a", " c"), (" c", " b")}  # duplicates and ties give no pair
    assert all(p["prompt"] == "P" and p["chosen_pass_rate"] > p["rejected_pass_rate"] for p in pairs)
    assert len(code.execution_pairs([task] * 4, completions, np.array(rates), max_per_task=1)) == 1


def test_judge_caches_and_pass_rate_reward_finds_the_task():
    tasks = code.generate_tasks(0)
    add_3 = next(t for t in tasks if t["task_id"] == "add_3")
    cache = {}
    results = code.judge([add_3, add_3, add_3], ["\n    return x + 3", "\n    return x + 4", "\n    return x + 3"],
                         cache=cache)
    assert [r.status for r in results] == ["ok", "failed", "ok"]
    assert len(cache) == 2 and results[0] is results[2]  # the repeated program ran once
    reward = code.PassRateReward(tasks)
    got = reward([add_3["prompt"] + "\n    return x + 3", add_3["prompt"] + "\n    return 4 if x == 1 else -1",
                  add_3["prompt"] + "\n    return x +"])
    assert np.allclose(got, [1.0, 1 / 3, 0.0])  # only add(1) == 4 passes; invalid Python scores 0
    assert all(r.pid != os.getpid() for r in reward.results)
    with pytest.raises(ValueError, match="no task has the prompt"):
        reward(['def nope():\n    """?"""\n    return 1'])
    with pytest.raises(ValueError, match="2 tasks but 1 completions"):
        code.judge([add_3, add_3], [""])


MBPP_RECORDS = [
    {"task_id": 11, "text": "Write a python function to remove first and last occurrence of a given character.",
     "code": "def remove_Occ(s,ch): \r\n    for i in range(len(s)): \r\n        if (s[i] == ch): \r\n"
             "            s = s[0 : i] + s[i + 1:] \r\n            break\r\n    for i in range(len(s) - 1,-1,-1):  \r\n"
             "        if (s[i] == ch): \r\n            s = s[0 : i] + s[i + 1:] \r\n            break\r\n    return s ",
     "test_list": ['assert remove_Occ("hello","l") == "heo"', 'assert remove_Occ("abcda","a") == "bcd"',
                   'assert remove_Occ("PHP","P") == "H"'],
     "test_setup_code": "", "challenge_test_list": ['assert remove_Occ("hellolloll","l") == "helollol"']},
    {"task_id": 17, "text": "Write a function to find the perimeter of a square.",
     "code": "def square_perimeter(a):\r\n  perimeter=4*a\r\n  return perimeter",
     "test_list": ["assert square_perimeter(10)==40", "assert square_perimeter(5)==20"],
     "test_setup_code": "", "challenge_test_list": []},
]


def test_mbpp_mapping_on_a_local_file_in_the_hub_schema(tmp_path):
    path = tmp_path / "mbpp.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in MBPP_RECORDS))
    tasks = code.load_mbpp(str(path))
    assert [t["task_id"] for t in tasks] == ["mbpp_11", "mbpp_17"]
    first = tasks[0]
    assert first["prompt"] == ('"""Write a python function to remove first and last occurrence of a given character.\n'
                               'assert remove_Occ("hello","l") == "heo"\n"""')
    assert len(first["tests"]) == 4 and "\r" not in first["reference"]
    results = code.judge(tasks, [t["reference"] for t in tasks])
    assert [r.status for r in results] == ["ok", "ok"]
    assert [r.passed for r in results] == [4, 2]
    # the reward finds MBPP prompts too
    assert np.allclose(code.PassRateReward(tasks)([tasks[1]["prompt"] + "\ndef square_perimeter(a):\n  return a"]),
                       [0.0])
    assert len(code.load_mbpp(str(path), limit=1)) == 1


def test_mbpp_record_missing_a_field_names_it():
    record = {k: v for k, v in MBPP_RECORDS[1].items() if k != "test_list"}
    with pytest.raises(ValueError, match="mbpp.jsonl\\[3\\].*'test_list'"):
        code.mbpp_to_task(record, where="mbpp.jsonl[3]")


def test_collapse_rule_by_hand():
    from dpo_lab.tasks.code_sweep import collapsed

    sft = {"per_task_pass": [0.5] * 10, "per_task_valid": [0.8] * 10}
    broken = {"per_task_pass": [0.0] * 10, "per_task_valid": [0.1] * 10}  # fewer valid programs, no better
    assert collapsed(broken, sft)["collapsed"]
    better = {"per_task_pass": [0.6] * 10, "per_task_valid": [0.1] * 10}  # invalid more often, but passes more
    assert not collapsed(better, sft)["collapsed"]
    # valid share 0.5 against 0.8, but spread over tasks: the verdict follows the interval's upper end
    noisy = {"per_task_pass": [0.5] * 10, "per_task_valid": [0.0, 1.0] * 5}
    result = collapsed(noisy, sft)
    assert result["valid_ci"][0] < result["valid_diff"] < result["valid_ci"][1]
    assert result["collapsed"] == (result["valid_ci"][1] < 0)


def test_the_shipped_sweep_matches_notebook_04_and_its_own_rule():
    from dpo_lab.tasks.code_sweep import BETAS, KNOBS, LEARNING_RATES, collapsed, load_sweep, notebook_tiny_config

    sweep, cfg = load_sweep(), notebook_tiny_config()
    assert sweep["config"] == {k: cfg[k] for k in KNOBS}, "rerun python -m dpo_lab.tasks.code_sweep"
    assert sweep["generator_version"] == code.GENERATOR_VERSION
    valid_tasks = [t for t in code.load_tasks() if t["split"] == "validation"]
    assert sweep["n_validation_tasks"] == len(valid_tasks) == len(sweep["sft"]["per_task_pass"])
    assert len(LEARNING_RATES) >= 3 and len(BETAS) >= 2
    for loss in ("dpo", "dpo_nll"):
        runs = [r for r in sweep["runs"] if r["loss"] == loss]
        assert {(r["lr"], r["beta"]) for r in runs} == {(lr, b) for lr in LEARNING_RATES for b in BETAS}
        best = max(runs, key=lambda r: r["pass@1"])
        assert sweep["chosen"][loss] == {"lr": best["lr"], "beta": best["beta"]}
        for r in runs:  # the saved verdicts follow from the saved per-task scores
            assert r["pass@1"] == pytest.approx(np.mean(r["per_task_pass"]))
            assert collapsed(r, sweep["sft"]) == {k: r[k] for k in ("pass_diff", "pass_ci", "valid_diff", "valid_ci",
                                                                     "collapsed")}
    # the notebook uses the sweep's choices
    assert (cfg["dpo_lr"], cfg["dpo_beta"]) == (sweep["chosen"]["dpo_nll"]["lr"], sweep["chosen"]["dpo_nll"]["beta"])
    assert (cfg["dpo_plain_lr"], cfg["dpo_plain_beta"]) == (sweep["chosen"]["dpo"]["lr"],
                                                            sweep["chosen"]["dpo"]["beta"])
