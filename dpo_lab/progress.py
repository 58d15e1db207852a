"""One progress bar for every loop of the course: plain text, so a saved notebook shows it finished.

``tqdm.auto`` draws a widget in Jupyter, and a notebook file keeps only the widget's first
frame ("0%|          | 0/188"): every committed notebook would say its loops never started.
A text bar writes each frame to stderr after a carriage return; Jupyter shows the last frame
live, and a notebook executed with ``coalesce_streams`` (the course's ``execute`` commands and
tests do) stores only the finished one ("100%|##########| 188/188 [01:17<00:00]").
"""

from __future__ import annotations

import sys


def progress(iterable, desc: str, total: int | None = None, enabled: bool = True):
    """``iterable`` wrapped in a text progress bar named ``desc`` (``enabled=False``: unchanged).

    At most one frame a second (``mininterval``), so the bar costs nothing next to a step."""
    if not enabled:
        return iterable
    from tqdm.std import tqdm  # the text bar, never the widget (see the module docstring)

    # disable=False, given explicitly: TQDM_DISABLE=1 (which silences bars libraries draw, such as TRL's reference
    # pass) must not silence the course's own
    return tqdm(iterable, desc=desc, total=total, mininterval=1.0, file=sys.stderr, ascii=True, ncols=90,
                disable=False)
