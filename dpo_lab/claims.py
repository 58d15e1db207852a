"""Claims about results, checked in one place: :func:`claim`.

Every sentence of a notebook that states a *result* ("DPO raises the gold reward over
SFT", "the reward model ranks at least 65% of held-out pairs correctly") is a call::

    claim("DPO beats SFT on gold reward", dpo_gold, ">", sft_gold)
    claim("reward-model accuracy", rm_accuracy, ">=", 0.65, interval=(lo, hi))
    claim("gold falls after its peak", (np.diff(curve) < 0).all())   # a yes/no claim

A claim records its value, its interval (lower and upper bound, when the notebook has
one), the threshold and the **margin**: how far the value is on the right side of the
threshold (positive: holds; negative: fails). With an interval the *conservative* end
is compared (the lower bound for ``>``/``>=``, the upper bound for ``<``/``<=``), so a
claim on an interval holds only if the whole interval clears the threshold.

What happens when a claim fails depends on where the notebook runs:

* ``tiny`` profile (a laptop, CI): :class:`ClaimFailed` is raised, so CI fails when a
  claim the text makes stops being true.
* ``full`` profile: nothing here can check pretrained runs, and a learner's run must not
  stop on an unverified threshold, so a failed claim is reported ("does not hold") with
  its numbers and the notebook goes on.
* ``DPO_LAB_SCALE=smoke`` (the full profile at a cut scale against a stand-in Hub, in CI):
  random weights cannot show learned effects, so claims are only recorded.
* ``DPO_LAB_CLAIMS=report`` overrides the profile's mode: a tiny run goes on past a failed
  claim, so ``python -m dpo_lab.seeds --all-claims`` can list *every* claim that fails at a
  seed, not only the first.

Facts that are not results (shapes, schemas, finiteness, log 2 at step 0, equality with
TRL) stay plain ``assert`` statements and raise everywhere.

:func:`claims_table` returns what was recorded; :func:`report_claims` prints it (the
last cell of every notebook) and :func:`dpo_lab.results.save_results` stores it under
the ``"claims"`` key of the notebook's results.
"""

from __future__ import annotations

import math
import operator

_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
        "==": operator.eq, "!=": operator.ne}

#: the claims recorded in this process (a notebook's kernel), in order
RECORDED: list[dict] = []


class ClaimFailed(AssertionError):
    """A claim about a result does not hold (raised in the tiny profile only)."""


def claim_mode() -> str:
    """``"raise"`` (tiny profile), ``"report"`` (full profile) or ``"record"`` (smoke scale).

    ``DPO_LAB_CLAIMS`` (``raise`` or ``report``), when set, overrides the profile's mode."""
    import os

    from dpo_lab.env import get_profile, get_scale

    override = os.environ.get("DPO_LAB_CLAIMS")
    if override is not None:
        if override not in ("raise", "report"):
            raise ValueError(f"DPO_LAB_CLAIMS={override!r}: use 'raise' or 'report'")
        return override
    if get_scale() == "smoke":
        return "record"
    return "raise" if get_profile() == "tiny" else "report"


def _number(value):
    """A plain Python number or bool from a tensor / NumPy scalar (or the value unchanged)."""
    if hasattr(value, "item") and not isinstance(value, (int, float, bool)):
        try:
            value = value.item()  # a 0-d or one-element tensor / array, a NumPy scalar
        except (ValueError, RuntimeError) as err:
            raise TypeError(f"claim() takes one number, not {type(value).__name__} of shape "
                            f"{tuple(getattr(value, 'shape', ()))}; reduce it first (.all(), .mean())") from err
    if hasattr(value, "__len__") and not isinstance(value, str):
        raise TypeError(f"claim() takes one number, not {type(value).__name__} of length {len(value)}; "
                        "reduce it first (.all(), .mean(), .min())")
    return value


def claim(name: str, value, op: str | None = None, threshold=None, *, interval=None, note: str = "",
          mode: str | None = None) -> bool:
    """Check and record one claim about a result; return whether it holds.

    ``claim(name, value, op, threshold)`` compares ``value op threshold`` with ``op`` one of
    ``>``, ``>=``, ``<``, ``<=``, ``==``, ``!=``. ``claim(name, condition)`` (no ``op``) is a
    yes/no claim: it holds when ``condition`` is true, and has no margin.

    ``claim(name, difference, "ties", 0, interval=ci)`` says two methods tie: it holds when the
    interval of their difference contains 0 (neither is clearly ahead).

    ``interval=(lower, upper)`` is the value's 95% interval, best from :mod:`dpo_lab.stats`
    (Wilson for a proportion, a paired bootstrap for a difference), whose ``.method`` is
    recorded with the claim; the comparison then uses its conservative end (see the module
    docstring).
    ``mode`` overrides :func:`claim_mode` (``"raise"``, ``"report"``, ``"record"``).
    """
    if not name or not isinstance(name, str):
        raise ValueError("a claim needs a name (a short sentence saying what is claimed)")
    value = _number(value)
    lower = upper = None
    if interval is not None:
        lower, upper = (_number(v) for v in interval)
        if not lower <= upper:
            raise ValueError(f"claim {name!r}: interval {interval} has lower > upper")
    if op is None:
        if threshold is not None or interval is not None:
            raise ValueError(f"claim {name!r}: a threshold or an interval needs an op such as '>'")
        holds, margin, compared = bool(value), None, bool(value)
    elif op == "ties":  # "A and B tie": the interval of their difference contains the threshold (0)
        if interval is None:
            raise ValueError(f"claim {name!r}: 'ties' needs the interval of the difference")
        threshold = _number(threshold)
        holds = bool(lower <= threshold <= upper)
        margin = float(min(threshold - lower, upper - threshold))
    else:
        if op not in _OPS:
            raise ValueError(f"claim {name!r}: op {op!r} is not one of {sorted(_OPS) + ['ties']}")
        threshold = _number(threshold)
        compared = value
        if interval is not None and op in (">", ">="):
            compared = lower
        elif interval is not None and op in ("<", "<="):
            compared = upper
        holds = bool(_OPS[op](compared, threshold))
        margin = None
        if op in (">", ">=") and not isinstance(compared, bool):
            margin = float(compared - threshold)
        elif op in ("<", "<=") and not isinstance(compared, bool):
            margin = float(threshold - compared)
        elif op in ("==", "!=") and isinstance(compared, (int, float)) and not isinstance(compared, bool):
            margin = float(abs(compared - threshold)) * (1 if op == "!=" else -1)
    mode = mode or claim_mode()
    if mode not in ("raise", "report", "record"):
        raise ValueError(f"mode {mode!r} is not 'raise', 'report' or 'record'")
    row = {"claim": name, "value": _plain(value), "op": op or "", "threshold": _plain(threshold),
           "lower": _plain(lower), "upper": _plain(upper), "interval_method": getattr(interval, "method", ""),
           "margin": margin, "holds": holds, "note": note}
    _replace(row)
    if not holds:
        text = describe(row)
        if mode == "raise":
            raise ClaimFailed(f"claim does not hold: {text}")
        if mode == "report":
            print(f"claim does not hold here (the run goes on): {text}")
    return holds


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _replace(row: dict) -> None:
    """Record ``row``; re-running a cell replaces its earlier claim of the same name."""
    for i, old in enumerate(RECORDED):
        if old["claim"] == row["claim"]:
            RECORDED[i] = row
            return
    RECORDED.append(row)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def describe(row: dict) -> str:
    """One recorded claim as the claims table prints it: ``name: value [lower, upper] op threshold, margin m``."""
    if not row["op"]:
        return f"{row['claim']} (value {_fmt(row['value'])})"
    interval = f" [{_fmt(row['lower'])}, {_fmt(row['upper'])}]" if row["lower"] is not None else ""
    margin = f", margin {_fmt(row['margin'])}" if row["margin"] is not None else ""
    return f"{row['claim']}: {_fmt(row['value'])}{interval} {row['op']} {_fmt(row['threshold'])}{margin}"


def claims_table():
    """The recorded claims as a pandas DataFrame, one row a claim."""
    import pandas as pd

    columns = ["claim", "value", "op", "threshold", "lower", "upper", "interval_method", "margin", "holds",
               "note"]
    return pd.DataFrame(RECORDED, columns=columns)


def claims_records() -> list[dict]:
    """The recorded claims as plain dicts (what ``save_results`` stores)."""
    return [dict(row) for row in RECORDED]


def reset_claims() -> None:
    """Forget the recorded claims (tests; a notebook starts with an empty list)."""
    RECORDED.clear()


def report_claims() -> None:
    """Print the claims table: every claim, its numbers and whether it holds in this run."""
    mode = claim_mode()
    held = sum(row["holds"] for row in RECORDED)
    where = {"raise": "tiny profile: a failed claim stops the notebook",
             "report": "full profile: reported, not enforced",
             "record": "smoke scale: recorded only (random weights show no learned effect)"}[mode]
    print(f"{held} of {len(RECORDED)} claims hold ({where})")
    for row in RECORDED:
        mark = "holds" if row["holds"] else "DOES NOT HOLD"
        print(f"  {mark:>13}  {describe(row)}")
    try:  # in a notebook, also store the rows as JSON in the cell's output: tests read them there
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display({"application/json": {"claims": claims_records()}}, raw=True)
    except ImportError:
        pass


#: comparisons whose conservative end is checked; ``==``/``!=`` and yes/no claims are exact
_INEQUALITIES = (">", ">=", "<", "<=")


def recorded_problems(rows: list[dict], require_intervals: bool = True) -> list[str]:
    """What is wrong with recorded claim ``rows`` (empty when nothing is): read by the tests.

    A row is wrong when it does not hold, when its ``holds`` does not follow from the
    conservative end of its interval, or (``require_intervals``) when an inequality carries
    no interval and its note does not start with ``"deterministic"`` (a number with no
    sampling noise: a parameter count, a closed form).
    """
    problems = []
    for row in rows:
        name, op = row["claim"], row["op"]
        if not row["holds"]:
            problems.append(f"{name!r} does not hold: {describe(row)}")
        if op == "ties":
            if row["lower"] is None or not row["lower"] <= row["threshold"] <= row["upper"]:
                problems.append(f"{name!r} is recorded as a tie but its interval does not contain the threshold: "
                                f"{describe(row)}")
            continue
        if op not in _INEQUALITIES:
            continue
        if row["lower"] is None:
            if require_intervals and not str(row.get("note", "")).startswith("deterministic"):
                problems.append(f"{name!r} compares a measured number without an interval: {describe(row)}")
            continue
        end = row["lower"] if op in (">", ">=") else row["upper"]
        if isinstance(end, str) or not _OPS[op](end, row["threshold"]):
            problems.append(f"{name!r} is recorded as holding but its interval does not clear "
                            f"the threshold: {describe(row)}")
    return problems
