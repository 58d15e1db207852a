"""Two rules that keep dpo_lab readable as one piece (issue #22): no module imports another
module's private helpers, and the core never imports a task (tasks build on the core); and one
vocabulary: the same argument names for the same things in every public function."""

import ast
import importlib
import inspect
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dpo_lab"


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dpo_lab"):
            yield node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("dpo_lab"):
                    yield alias.name, []


def test_no_module_imports_another_modules_private_names():
    found = [f"{path.relative_to(PACKAGE.parent)} imports {name} from {module}"
             for path in PACKAGE.rglob("*.py") for module, names in _imports(path)
             for name in names if name.startswith("_") and module != "dpo_lab"]
    assert found == []


def test_the_core_does_not_import_tasks():
    found = {path.stem for path in PACKAGE.glob("*.py")
             for module, names in _imports(path)
             if module.startswith("dpo_lab.tasks") or (module == "dpo_lab" and "tasks" in names)}
    assert found == set(), f"core modules that import a task: {sorted(found)}"


# the one vocabulary (issue #22): one name for each thing across every public function
RETIRED = {"reference": "ref_model", "on_checkpoint": "callback", "checkpoint_every": "callback_every",
           "on_eval": "callback", "eval_every": "callback_every"}
# the padding primitives work below the tokenizer, on ids; every other function takes the tokenizer
TAKE_PAD_ID = {"dpo_lab.collate.pad_batch", "dpo_lab.collate.collate_pairs", "dpo_lab.reward_model.pad_rows",
               "dpo_lab.sampling.generate_ids"}


def _public_functions():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if any(p.startswith("_") for p in parts):
            continue
        module = importlib.import_module(".".join(parts))
        for name, obj in vars(module).items():
            if inspect.isfunction(obj) and obj.__module__ == module.__name__ and not name.startswith("_"):
                yield f"{module.__name__}.{name}", inspect.signature(obj)


def test_one_name_for_each_argument():
    found = []
    for name, signature in _public_functions():
        for param in signature.parameters:
            if param in RETIRED:
                found.append(f"{name}({param}=...): call it {RETIRED[param]}")
            if param == "pad_token_id" and name not in TAKE_PAD_ID:
                found.append(f"{name}(pad_token_id=...): take the tokenizer")
    assert found == []


def test_every_training_loop_has_the_same_callback_arguments():
    from dpo_lab import diffusion, rloo, train

    for loop in (train.train_dpo, rloo.train_rloo, diffusion.train_diffusion_dpo):
        params = inspect.signature(loop).parameters
        assert {"callback", "callback_every", "progress", "desc"} <= set(params), loop.__name__
