"""How ``pytest -n 2`` shares the work between its two workers (pyproject.toml's addopts).

A notebook's cells share one kernel, so a notebook must run whole on one worker, in order; so
must a test file (its module fixtures are built once). That is pytest-xdist's ``--dist loadfile``.
The one exception are the full-profile smoke runs (tests/test_full_smoke.py): each notebook's
is independent and long, so each is its own unit and the two workers share them.

This is done with xdist's scheduler hook, not with ``xdist_group`` marks: ``--dist loadgroup``
renames each test's node id, which pytest 9.2 no longer lets a plugin do, and the marks were then
silently ignored (notebook cells ran on both workers and failed with ``NameError``).
"""

try:
    from xdist.scheduler import LoadFileScheduling
except ImportError:  # pytest-xdist is in the `dev` extra; without it pytest runs in one process
    LoadFileScheduling = None

# node ids that start with one of these are each their own unit of work
SEPARATE = ("tests/test_full_smoke.py::test_notebook_runs_in_the_full_profile_at_smoke_scale[",)


def split_scope(nodeid: str) -> str:
    """The unit of work a test belongs to: its file, or itself for a separate smoke run."""
    return nodeid if nodeid.startswith(SEPARATE) else nodeid.split("::", 1)[0]


if LoadFileScheduling is not None:
    class WholeFileScheduling(LoadFileScheduling):
        """``--dist loadfile``, except that each full-profile smoke run is its own unit."""

        def _split_scope(self, nodeid: str) -> str:
            return split_scope(nodeid)

    def pytest_xdist_make_scheduler(config, log):
        if config.getvalue("dist") == "loadfile":
            return WholeFileScheduling(config, log)
        return None
