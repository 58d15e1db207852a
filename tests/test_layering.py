"""Two rules that keep dpo_lab readable as one piece (issue #22): no module imports another
module's private helpers, and the core never imports a task (tasks build on the core)."""

import ast
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
