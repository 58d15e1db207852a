"""Every notebook's full profile fits a Colab T4: its peak memory, computed without allocating it
(dpo_lab.sizing), against 14 GiB of GPU memory and 11 GiB of host RAM."""

import pytest
import torch

from dpo_lab import sizing
from dpo_lab.costs import peak_rss_mb, reset_peak_rss

NOTEBOOKS = sizing.notebook_paths()


def test_every_sized_notebook_is_found():
    assert sorted(NOTEBOOKS) == ["02", "03", "04", "05", "06", "07", "08", "09"]


@pytest.mark.parametrize("nb", sorted(NOTEBOOKS))
def test_full_profile_fits_a_t4(nb):
    cfg = sizing.notebook_config(NOTEBOOKS[nb])
    over = [f"notebook {nb}, stage {r['stage']!r}: GPU {r['gpu_gib']:.2f} GiB (budget {sizing.GPU_BUDGET_GIB}), "
            f"host {r['host_gib']:.2f} GiB (budget {sizing.HOST_BUDGET_GIB})"
            for r in sizing.estimate(nb, cfg)
            if r["gpu_gib"] > sizing.GPU_BUDGET_GIB or r["host_gib"] > sizing.HOST_BUDGET_GIB]
    assert not over, "\n".join(over)


def test_committed_estimates_are_up_to_date():
    # the README's full-profile column reads data/t4_estimates.json: it must be what the configs give now
    import json

    from dpo_lab.paths import data_path

    committed = json.loads(data_path(sizing.ESTIMATES).read_text())
    assert committed == sizing.summary(sizing.table()), "run python -m dpo_lab.sizing --write, then the syllabus"


def _tiny_dpo_step(tracker_on_real: bool, width: int = 64, rows: int = 8):
    """Peak bytes of a DPO step of a small GPT-2, traced on fake tensors and on real ones."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from dpo_lab.precision import Precision, backward_and_step
    from dpo_lab.train import dpo_batch_loss

    tracker = sizing.PeakMemory()
    with (sizing.fake_mode() if not tracker_on_real else torch.device("cpu")), tracker:
        model = GPT2LMHeadModel(GPT2Config(vocab_size=4000, n_positions=128, n_embd=width, n_layer=2, n_head=2,
                                                bos_token_id=0, eos_token_id=0))
        batch = sizing._batch(rows, 128, 0, 4000)  # every position a completion: nonzero's worst case, exactly
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, foreach=True)
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        optimizer.step()
        loss = dpo_batch_loss(model, batch, torch.zeros(rows // 2), torch.zeros(rows // 2), beta=0.1)[0]
        backward_and_step(loss, optimizer, model.parameters(), 1.0, Precision("fp32").grad_scaler())
    return tracker.peak


def test_fake_trace_matches_real_tensors():
    # The same code on real CPU tensors, counted by the same tracker: fake tensors must give the
    # same peak. Up to 2%: a real batch has one more storage here and there (the CPU path of an op
    # may keep a temporary its meta function does not).
    fake, real = _tiny_dpo_step(False), _tiny_dpo_step(True)
    assert abs(fake - real) <= 0.02 * real, (fake, real)


def test_tracker_agrees_with_the_process_peak_rss():
    # What the kernel saw the process take while a traced step ran for real, against the tracker's
    # count. The RSS rise also holds allocator slack and the libraries' lazily loaded code (a first
    # small step runs before, to load it), and misses pages reused from earlier frees, so the
    # tolerance is wide: within a factor of 2 either way, at a size well above the noise of a few MiB.
    torch.set_num_threads(1)
    _tiny_dpo_step(True)
    if not reset_peak_rss():
        pytest.skip("no /proc/self/clear_refs here")
    before = peak_rss_mb()
    traced = _tiny_dpo_step(True, width=256, rows=32) / 2**20
    rise = peak_rss_mb() - before
    assert traced / 2 <= rise <= traced * 2, (traced, rise)
