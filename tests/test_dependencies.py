"""One list of dependencies: every import is declared in pyproject.toml, and requirements.txt,
environment.yml and dpo_lab.env agree with it.

Rules: what ``dpo_lab`` imports at module level is a core dependency; what its functions import
and what the notebooks import is core or in the ``course`` extra; what the tests import may also
be in the ``dev`` extra.
"""

import ast
import functools
import re
import sys
from importlib import metadata
from pathlib import Path

import nbformat
import pytest
from installs import ROOT, pyproject
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from dpo_lab.env import COURSE_EXTRA, MAX_EXCLUSIVE, MIN_VERSIONS, check_environment
from dpo_lab.extras import COURSE, MissingExtra, require

# import names whose distribution is named otherwise (packages_distributions() covers installed ones)
DIST_OF = {"sklearn": "scikit-learn", "PIL": "pillow", "IPython": "ipython", "yaml": "pyyaml"}
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name
# first-party: the package and the tests' own helper modules (tests/*.py, imported by name)
LOCAL = {"dpo_lab"} | {p.stem for p in (Path(__file__).resolve().parent).glob("*.py")}


def imports(source: str) -> list[tuple[str, bool]]:
    """``(top-level module, at module level?)`` for each absolute import in ``source``."""
    source = "\n".join("pass" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    out = []

    def visit(node, top_level: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                out.extend((alias.name.split(".")[0], top_level) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0:
                out.append((child.module.split(".")[0], top_level))
            inner = top_level and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                                                         ast.ClassDef))
            visit(child, inner)

    visit(ast.parse(source), True)
    return out


@functools.cache
def installed_modules() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def distribution(module: str) -> str:
    if module in DIST_OF:
        return DIST_OF[module]
    found = installed_modules().get(module)
    return canonicalize_name(found[0] if found else module)


def declared() -> dict[str, dict[str, str]]:
    """``{"core"|"course"|"dev": {distribution: specifier}}`` from pyproject.toml."""
    project = pyproject()["project"]
    groups = {"core": project["dependencies"], **project["optional-dependencies"]}
    return {g: {canonicalize_name(Requirement(r).name): str(Requirement(r).specifier) for r in reqs}
            for g, reqs in groups.items()}


def all_imports() -> list[tuple[str, str, str]]:
    """``(where, module, kind)`` for every third-party import; kind is "module-level", "function" or "test"."""
    found = []
    for path in sorted((ROOT / "dpo_lab").rglob("*.py")):
        for module, top in imports(path.read_text(encoding="utf-8")):
            found.append((str(path.relative_to(ROOT)), module, "module-level" if top else "function"))
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                found.extend((f"notebooks/{path.name}", module, "function") for module, _ in imports(cell.source))
    for path in sorted((ROOT / "tests").glob("*.py")):
        found.extend((f"tests/{path.name}", module, "test") for module, _ in imports(path.read_text(encoding="utf-8")))
    return [(w, m, k) for w, m, k in found if m not in sys.stdlib_module_names and m not in LOCAL]


ALLOWED = {"module-level": ("core",), "function": ("core", "course"), "test": ("core", "course", "dev")}


def undeclared(groups: dict[str, dict[str, str]]) -> list[str]:
    problems = []
    for where, module, kind in all_imports():
        dist = distribution(module)
        if not any(dist in groups[g] for g in ALLOWED[kind]):
            problems.append(f"{where}: imports {module} ({kind}), but {dist} is not in "
                            f"{' / '.join(ALLOWED[kind])} of pyproject.toml")
    return sorted(set(problems))


def test_every_import_is_declared():
    assert undeclared(declared()) == []


def test_the_check_fails_without_trl():
    groups = declared()
    del groups["course"]["trl"]
    problems = undeclared(groups)
    assert any(p.startswith("notebooks/07_efficiency_lora.ipynb: imports trl") for p in problems), problems
    assert any(p.startswith("dpo_lab/bench.py: imports trl") for p in problems), problems


def test_a_module_level_import_must_be_core():
    groups = declared()
    groups["course"]["transformers"] = groups["core"].pop("transformers")
    assert any("dpo_lab/models.py: imports transformers (module-level)" in p for p in undeclared(groups))


def test_requirements_txt_installs_the_package_with_its_extras_and_nothing_else():
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert [line for line in lines if line] == ["-e .[course,dev]"]


def conda_environment() -> tuple[dict[str, str], list[str]]:
    packages, pip, section, in_pip = {}, [], None, False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        stripped = line.split("#")[0].strip()
        if stripped.endswith(":") and not stripped.startswith("-"):
            section = stripped[:-1]
            continue
        if stripped.startswith("- pip:"):
            in_pip = True
            continue
        if not stripped.startswith("- ") or section != "dependencies":
            continue
        if in_pip:
            pip.append(stripped[2:].strip())
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", stripped[2:].strip())
        name = CONDA_NAMES.get(match.group(1), match.group(1))
        if name not in ("python", "pip"):
            packages[canonicalize_name(name)] = str(Requirement(f"x{match.group(2).replace(' ', '')}").specifier)
    return packages, pip


def test_environment_yml_names_pyprojects_packages_and_bounds():
    groups = declared()
    expected = {**groups["core"], **groups["course"], **groups["dev"]}
    packages, pip = conda_environment()
    assert packages == expected
    assert pip == ["-e .[course,dev]"]


def test_environment_check_knows_the_same_bounds():
    groups = declared()
    specs = {**groups["core"], **groups["course"]}
    for pkg, low in MIN_VERSIONS.items():
        expected = f">={low}" + (f",<{MAX_EXCLUSIVE[pkg]}" if pkg in MAX_EXCLUSIVE else "")
        assert specs[canonicalize_name(pkg)] == str(Requirement(f"x{expected}").specifier), pkg
    assert {p for p in MIN_VERSIONS if canonicalize_name(p) in groups["course"]} == COURSE_EXTRA
    rows = {r["package"]: r for r in check_environment()}
    assert rows["torch"]["status"] == "ok"  # this very environment passes its own check


def test_the_wheel_lists_every_subpackage():
    listed = set(pyproject()["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "dpo_lab").rglob("__init__.py")}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"


def test_require_names_the_extra():
    assert require("json") is sys.modules["json"]
    with pytest.raises(MissingExtra, match=r"dpo_lab\[course\]"):
        require("no_such_package_for_dpo_lab")
    assert set(COURSE.values()) <= set(declared()["course"])


# Function-level imports of `course` packages that do not go through extras.require yet, in files other
# branches own (bench.py, the task modules). Remove an entry when its import switches to require(); the
# test fails on a stale entry, and on a new direct import.
NOT_YET_REQUIRE = {
    ("dpo_lab/bench.py", "datasets"), ("dpo_lab/bench.py", "trl"),
    ("dpo_lab/tasks/digits.py", "sklearn"), ("dpo_lab/tasks/digits.py", "PIL"), ("dpo_lab/tasks/digits.py", "datasets"),
    ("dpo_lab/tasks/moderation.py", "sklearn"),
}


def direct_optional_imports() -> set[tuple[str, str]]:
    """``(file, module)`` for each plain import of a `course` package in dpo_lab, outside a try/except ImportError."""
    found = set()
    for path in sorted((ROOT / "dpo_lab").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        guarded = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try)
                   and any(isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                           for h in t.handlers) for s in t.body for n in ast.walk(s)}
        for node in ast.walk(tree):
            if id(node) in guarded:
                continue
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                if name.split(".")[0] in COURSE:
                    found.add((str(path.relative_to(ROOT)), name.split(".")[0]))
    return found


def test_optional_imports_go_through_require():
    assert direct_optional_imports() == NOT_YET_REQUIRE
