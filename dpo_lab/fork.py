"""Point the course at a fork: ``python -m dpo_lab.fork OWNER/REPO [REF]``.

A notebook opened on Colab clones the repository named in its set-up cell, at the ref named
there, and its Colab badge opens the notebook from a repository and ref too. For a fork (a class's
copy, a branch under review) both must name the fork, or a learner would run the fork's
notebook against upstream's code. This rewrites, in every notebook and in ``README.md``:

* the set-up cell's two lines ``REPO = ...("DPO_LAB_REPO", "https://github.com/OWNER/REPO")``
  and ``REF = ...("DPO_LAB_REF", "REF")``;
* every Colab badge, ``https://colab.research.google.com/github/OWNER/REPO/blob/REF/notebooks/NN.ipynb``;
* the README's ``pip install "dpo_lab @ git+https://github.com/OWNER/REPO[@REF]"`` lines.

``python -m dpo_lab.fork --check`` lists disagreements (``tests/test_setup_cell.py`` runs it):
set-up cells that differ, badges that name another repository or ref than the set-up cells, and
notebooks without a badge in the README or in their own first cell.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO_LINE = re.compile(r'^(REPO = os\.environ\.get\("DPO_LAB_REPO", ")([^"]*)(")', re.M)
REF_LINE = re.compile(r'^(REF = os\.environ\.get\("DPO_LAB_REF", ")([^"]*)(")', re.M)
BADGE = re.compile(r"https://colab\.research\.google\.com/github/([\w.-]+)/([\w.-]+)/blob/(\S+?)/notebooks/([\w.-]+\.ipynb)")
GIT_INSTALL = re.compile(r"git\+https://github\.com/([\w.-]+)/([\w.-]+?)(?:@([\w./-]+))?(?=[\"'\s])")
GITHUB = re.compile(r"https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?$")


def notebooks(root: Path) -> list[Path]:
    return sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def setup_cell(notebook) -> str:
    """The source of a notebook's first code cell (its set-up cell)."""
    return next(cell.source for cell in notebook.cells if cell.cell_type == "code")


def cell_target(source: str) -> tuple[str, str]:
    """``(url, ref)`` written in a set-up cell; ValueError if a line is missing."""
    repo, ref = REPO_LINE.search(source), REF_LINE.search(source)
    if not repo or not ref:
        raise ValueError("the set-up cell has no REPO = ... / REF = ... line")
    return repo.group(2), ref.group(2)


def check(root: Path) -> list[str]:
    """Every disagreement between set-up cells and badges, as readable lines ([] when all agree)."""
    import nbformat

    problems, targets = [], {}
    readme = (root / "README.md").read_text(encoding="utf-8")
    readme_badges = {m.group(4): m.groups() for m in BADGE.finditer(readme)}
    for path in notebooks(root):
        nb = nbformat.read(path, as_version=4)
        try:
            targets[path.name] = cell_target(setup_cell(nb))
        except ValueError as err:
            problems.append(f"{path.name}: {err}")
            continue
        url, ref = targets[path.name]
        match = GITHUB.match(url)
        owner_repo = match.groups() if match else None
        if owner_repo is None:
            problems.append(f"{path.name}: set-up cell's REPO {url!r} is not a https://github.com/OWNER/REPO URL")
        own = [m.groups() for cell in nb.cells if cell.cell_type == "markdown" for m in BADGE.finditer(cell.source)]
        for where, found in (("README.md", [readme_badges[path.name]] if path.name in readme_badges else []),
                             (path.name, own)):
            if not found:
                problems.append(f"{where}: no Colab badge for {path.name}")
            for owner, repo, badge_ref, name in found:
                if name != path.name:
                    problems.append(f"{where}: badge opens {name}, not {path.name}")
                if owner_repo and ((owner, repo) != owner_repo or badge_ref != ref):
                    problems.append(f"{where}: the badge of {name} opens {owner}/{repo}@{badge_ref}, "
                                    f"the set-up cell clones {owner_repo[0]}/{owner_repo[1]}@{ref}")
    if len(set(targets.values())) > 1:
        problems.append(f"set-up cells name different repositories or refs: {targets}")
    sources = {}
    for path in notebooks(root):
        sources.setdefault(setup_cell(nbformat.read(path, as_version=4)), []).append(path.name)
    if len(sources) > 1:
        problems.append(f"set-up cells differ: {sorted(sources.values())}")
    if len(set(targets.values())) == 1:
        url, ref = next(iter(targets.values()))
        for match in GIT_INSTALL.finditer(readme):
            owner, repo, git_ref = match.groups()
            if f"https://github.com/{owner}/{repo}" != url or (git_ref or "main") != ref:
                problems.append(f"README.md: {match.group(0)} installs another repository or ref than the "
                                f"set-up cells clone ({url} at {ref})")
    for name in readme_badges:
        if not (root / "notebooks" / name).exists():
            problems.append(f"README.md: badge for {name}, which is not in notebooks/")
    return problems


def rewrite(root: Path, owner_repo: str, ref: str = "main") -> list[Path]:
    """Point every set-up cell and every Colab badge at ``owner_repo`` and ``ref``; return the files changed."""
    import nbformat

    if not re.fullmatch(r"[\w.-]+/[\w.-]+", owner_repo):
        raise ValueError(f"{owner_repo!r} is not OWNER/REPO")
    if not ref or any(ch.isspace() for ch in ref) or '"' in ref:
        raise ValueError(f"{ref!r} is not a branch or tag name")
    owner, repo = owner_repo.split("/")
    url = f"https://github.com/{owner}/{repo}"

    def badges(text: str) -> str:
        return BADGE.sub(lambda m: f"https://colab.research.google.com/github/{owner}/{repo}/blob/{ref}/notebooks/"
                                   f"{m.group(4)}", text)

    changed = []
    for path in notebooks(root):
        nb = nbformat.read(path, as_version=4)
        before = [cell.source for cell in nb.cells]
        first = next(cell for cell in nb.cells if cell.cell_type == "code")
        cell_target(first.source)  # raises when the lines are missing
        first.source = REF_LINE.sub(lambda m: m.group(1) + ref + m.group(3),
                                    REPO_LINE.sub(lambda m: m.group(1) + url + m.group(3), first.source))
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = badges(cell.source)
        if [cell.source for cell in nb.cells] != before:
            nbformat.write(nb, path)
            changed.append(path)
    readme = root / "README.md"
    text = readme.read_text(encoding="utf-8")
    new = GIT_INSTALL.sub(f"git+{url}" + ("" if ref == "main" else f"@{ref}"), badges(text))
    if new != text:
        readme.write_text(new, encoding="utf-8")
        changed.append(readme)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Point the set-up cells and Colab badges at a fork.")
    parser.add_argument("repo", nargs="?", help="OWNER/REPO on GitHub, e.g. my-class/dpo-lab")
    parser.add_argument("ref", nargs="?", default="main", help="branch or tag to clone (default: main)")
    parser.add_argument("--check", action="store_true", help="only report disagreements")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the checkout (default: the one this dpo_lab lives in)")
    args = parser.parse_args(argv)
    if not (args.root / "notebooks").is_dir():
        parser.error(f"{args.root} is not a checkout of the course (no notebooks/); pass --root")
    if not args.check:
        if not args.repo:
            parser.error("give OWNER/REPO, or --check")
        for path in rewrite(args.root, args.repo, args.ref):
            print(f"rewrote {path.relative_to(args.root)}")
    problems = check(args.root)
    print("\n".join(problems) if problems else "set-up cells and Colab badges agree")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
