"""RLOO: advantages and rewards by hand, the loss's gradient, and a run that learns; and the cost meter."""

import copy

import numpy as np
import pytest
import torch

from dpo_lab.costs import exclude, measure
from dpo_lab.rloo import kl_penalized_rewards, rloo_advantages, rloo_loss, train_rloo


def test_rloo_advantage_by_hand():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 6.0], [0.5, 0.5, 0.5, 0.5]])
    # prompt 0: each reward minus the mean of the other three: 1 - 11/3, 2 - 10/3, 3 - 9/3, 6 - 6/3
    expected = [[-8 / 3, -4 / 3, 0.0, 4.0], [0.0, 0.0, 0.0, 0.0]]
    assert rloo_advantages(rewards).tolist() == [pytest.approx(row) for row in expected]
    # k = 2: each sample's baseline is the other sample
    assert rloo_advantages(torch.tensor([[3.0, 1.0]])).tolist() == [[2.0, -2.0]]
    # the identity A_i = k/(k-1) (r_i - mean)
    r = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(rloo_advantages(r), 1.5 * (r - r.mean(1, keepdim=True)), atol=1e-6)


def test_rloo_advantage_rejects_one_sample_a_prompt():
    with pytest.raises(ValueError, match="k >= 2"):
        rloo_advantages(torch.tensor([[1.0], [2.0]]))
    with pytest.raises(ValueError, match="k >= 2"):
        rloo_advantages(torch.tensor([1.0, 2.0]))


def test_kl_penalized_reward_by_hand():
    scores = torch.tensor([2.0, 0.5])
    policy, ref = torch.tensor([-10.0, -4.0], requires_grad=True), torch.tensor([-13.0, -3.0])
    rewards = kl_penalized_rewards(scores, policy, ref, kl_coef=0.1)
    assert rewards.tolist() == pytest.approx([2.0 - 0.3, 0.5 + 0.1])
    assert not rewards.requires_grad  # the reward is a constant for REINFORCE


def test_rloo_loss_gradient_is_minus_advantage_over_n():
    logps = torch.tensor([-3.0, -5.0, -1.0], requires_grad=True)
    advantages = torch.tensor([1.0, -2.0, 0.5])
    loss = rloo_loss(logps, advantages)
    loss.backward()
    assert loss.item() == pytest.approx(-(-3.0 + 10.0 - 0.5) / 3)
    assert logps.grad.tolist() == pytest.approx([-1 / 3, 2 / 3, -0.5 / 3])


def test_train_rloo_raises_the_reward_and_logs_it(tiny_model, tokenizer):
    """Reward: the completion's length in characters / 10 (long tokens pay). 30 steps at a high learning rate
    raise it from about 2 to about 3.5."""
    def chars(texts):
        return np.array([len(t) - len("The film") for t in texts]) / 10

    torch.manual_seed(0)
    ref = tiny_model
    policy = copy.deepcopy(ref).requires_grad_(True)
    evaluated = []
    history = train_rloo(policy, ref, tokenizer, ["The film"] * 4, chars, kl_coef=0.01, k=4, steps=30,
                         prompts_per_step=4, lr=1e-2, max_new_tokens=6, seed=0, monitor_fn=lambda t: -chars(t),
                         callback_every=10, callback=lambda step, m: evaluated.append(step) or {"marker": step},
                         progress=False)
    assert len(history) == 30 and evaluated == [10, 20, 30]
    assert history["samples"].iloc[-1] == 30 * 16
    assert history.kl.iloc[0] == pytest.approx(0.0, abs=1e-5)  # step 1 samples the reference itself
    assert history["reward/proxy"].iloc[-5:].mean() > history["reward/proxy"].iloc[:5].mean() + 1.0
    assert history.kl.iloc[-1] > 1.0  # bought with KL from the reference
    assert np.allclose(history["reward/gold"], -history["reward/proxy"])  # the monitor saw the same samples
    assert history.marker.dropna().tolist() == [10, 20, 30] and (history.callback_seconds.dropna() >= 0).all()
    assert history["step"].tolist() == list(range(1, 31))
    # seeded: the same run again gives the same numbers
    again = train_rloo(copy.deepcopy(ref).requires_grad_(True), ref, tokenizer, ["The film"] * 4, chars,
                       kl_coef=0.01, k=4, steps=3, prompts_per_step=4, lr=1e-2, max_new_tokens=6, seed=0,
                       progress=False)
    assert np.allclose(again["reward/proxy"], history["reward/proxy"].iloc[:3])


def test_train_rloo_bad_input(tiny_model, tokenizer):
    with pytest.raises(ValueError, match="k >= 2"):
        train_rloo(tiny_model, tiny_model, tokenizer, ["a"], lambda t: np.zeros(len(t)), k=1, progress=False)
    with pytest.raises(ValueError, match="at least one prompt"):
        train_rloo(tiny_model, tiny_model, tokenizer, [], lambda t: np.zeros(len(t)), progress=False)


def test_measure_times_and_excludes():
    """Time inside exclude() is left out: bounds from the sleeps and the elapsed time seen outside, which hold
    however busy the machine is (a sleep lasts at least its length; waiting for a core only adds time)."""
    import time

    outer_start = time.perf_counter()
    with measure("sleepy", models_in_memory=2, samples=5) as record:
        time.sleep(0.05)
        with exclude(record):
            time.sleep(0.3)
        _ = sum(i * i for i in range(200_000))  # some CPU work
    outer = time.perf_counter() - outer_start
    assert record["method"] == "sleepy" and record["models_in_memory"] == 2 and record["samples"] == 5
    assert record["excluded_wall_s"] >= 0.3
    # counted: the 0.05 s sleep and the work; not the excluded 0.3 s (without exclusion it would exceed outer - 0.3)
    assert 0.05 <= record["wall_s"] <= outer - record["excluded_wall_s"] <= outer - 0.3
    assert 0 < record["cpu_s"] <= record["wall_s"] + 0.01
    assert record["peak_mem_mb"] >= 0 and record["memory_kind"] in (
        "cpu rss rise", "cpu rss rise (polled: may miss short peaks)", "cuda max allocated")


def test_measure_sees_a_large_allocation(fresh_pages):
    """A 64 MiB block, touched then freed at once, is seen whole (the kernel's peak counter, not a polling
    thread that a short peak can slip past), and nothing else is counted: the rise stays under 64 + 16 MiB."""
    if torch.cuda.is_available():
        pytest.skip("on a GPU machine measure() reports CUDA memory")
    with measure("alloc") as record:
        fresh_pages(64)
    if record["memory_kind"] != "cpu rss rise":
        pytest.skip(f"no kernel peak-RSS counter here ({record['memory_kind']})")
    assert 62 < record["peak_mem_mb"] < 80


def test_measure_nested_blocks_keep_their_peaks(fresh_pages):
    """An inner block resets the kernel's counter; the outer block still sees the peak reached before it."""
    if torch.cuda.is_available():
        pytest.skip("on a GPU machine measure() reports CUDA memory")
    with measure("outer") as outer:
        fresh_pages(96)  # freed before the inner block starts
        with measure("inner") as inner:
            fresh_pages(40)
    if outer["memory_kind"] != "cpu rss rise":
        pytest.skip(f"no kernel peak-RSS counter here ({outer['memory_kind']})")
    assert 38 < inner["peak_mem_mb"] < 56
    assert 94 < outer["peak_mem_mb"] < 112


def test_rloo_scores_samples_at_their_sampling_temperature(tiny_model, tokenizer):
    """At T = 0.6 the samples come from softmax(logits / T): the first step's KL (logged) and loss must be those
    of log pi_T and log pi_ref,T, computed here token by token from the models' logits."""
    from dpo_lab.evaluate import sample
    from dpo_lab.rloo import rloo_advantages

    temperature, k, kl_coef = 0.6, 3, 0.5
    ref = tiny_model
    policy = copy.deepcopy(ref)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    prompts = ["The film"] * 2
    # the samples of step 1, drawn as train_rloo draws them (seed * 100_003 + step)
    samples = sample(policy, tokenizer, prompts, n=k, max_new_tokens=5, temperature=temperature,
                     batch_size=len(prompts) * k, seed=7 * 100_003)

    def logp_at_t(model, prompt_ids, completion_ids):
        ids = torch.tensor([prompt_ids + completion_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt_ids) - 1:-1].double() / temperature
        return torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion_ids)[:, None]).sum().item()

    pol = torch.tensor([logp_at_t(policy, p, c) for p, c in zip(samples.prompt_ids, samples.completion_ids)])
    rf = torch.tensor([logp_at_t(ref, p, c) for p, c in zip(samples.prompt_ids, samples.completion_ids)])
    advantages = rloo_advantages((-kl_coef * (pol - rf)).view(2, k)).view(-1)
    history = train_rloo(copy.deepcopy(policy), ref, tokenizer, prompts, lambda t: np.zeros(len(t)),
                         kl_coef=kl_coef, k=k, steps=1, prompts_per_step=2, lr=0.0, max_new_tokens=5,
                         temperature=temperature, seed=7, progress=False)
    assert history.kl.iloc[0] == pytest.approx((pol - rf).mean().item(), abs=1e-4)
    assert history.loss.iloc[0] == pytest.approx(-(advantages * pol).mean().item(), abs=1e-4)
    assert abs((pol - rf).mean().item()) > 0.05  # the policy differs from the reference: the test can tell
