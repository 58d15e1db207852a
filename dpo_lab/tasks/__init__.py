"""Tasks of the course, one module each: its data, its gold reward, its Hub mapping.

* ``sentiment``      movie-review openings, a lexicon gold reward (notebooks 02, 03, 07, 08)
* ``code``           small Python functions with hidden tests, run in the sandbox (04)
* ``summarization``  fact-listing summaries, a fact-coverage gold reward (05)
* ``digits``         the Diffusion-DPO task: digit images and a feature-based reward (06)
* ``moderation``     messages to FLAG or ALLOW with a reason (09)

And the offline sweeps that chose a notebook's settings on validation items, never its test
items: ``code_sweep``, ``summarization_sweep``, ``moderation_sweep``, with what they share in ``sweep``.
"""
