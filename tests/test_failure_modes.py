"""Helpers of notebook 08's failure-mode experiments, checked on cases worked out by hand."""

import copy

import pandas as pd
import pytest
import torch

from dpo_lab.collate import encode_examples, pad_batch
from dpo_lab.failure_modes import (
    flip_labels,
    known_word_counts,
    known_word_share,
    mass_per_completion,
    mass_shift,
    pairs_from_reviews,
    split_by_length,
    swap_where,
    top_mass_changes,
)

PAIRS = [{"prompt": f"p{i}", "chosen": f"good {i}", "rejected": f"bad {i}", "chosen_reward": 1.0,
          "rejected_reward": 0.0} for i in range(10)]


def test_flip_labels_flips_exactly_the_rate():
    flipped, mask = flip_labels(PAIRS, 0.3, seed=1)
    assert int(mask.sum()) == 3
    for pair, new, m in zip(PAIRS, flipped, mask.tolist()):
        if m:
            assert (new["chosen"], new["rejected"]) == (pair["rejected"], pair["chosen"])
            assert (new["chosen_reward"], new["rejected_reward"]) == (0.0, 1.0)
        else:
            assert new == pair
    assert PAIRS[0]["chosen"] == "good 0"  # the input is not modified
    assert flip_labels(PAIRS, 0.3, seed=1)[1].tolist() == mask.tolist()  # seeded
    assert int(flip_labels(PAIRS, 0.0)[1].sum()) == 0 and int(flip_labels(PAIRS, 1.0)[1].sum()) == 10
    with pytest.raises(ValueError, match="flip rate"):
        flip_labels(PAIRS, 1.5)


def test_swap_where():
    chosen, rejected = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([-1.0, -2.0, -3.0])
    c, r = swap_where((chosen, rejected), torch.tensor([False, True, False]))
    assert c.tolist() == [1.0, -2.0, 3.0] and r.tolist() == [-1.0, 2.0, -3.0]
    with pytest.raises(ValueError, match="mask has 2 rows"):
        swap_where((chosen, rejected), torch.tensor([True, False]))


def test_split_by_length():
    # gaps: +5, -3, +1, -4, +3
    split = split_by_length([10, 5, 7, 2, 9], [5, 8, 6, 6, 6], min_gap=3)
    assert split == {"chosen longer": [0, 4], "chosen shorter": [1, 3]}


def test_pairs_from_reviews_groups_by_prompt_and_ranks_by_gold():
    texts = ["I saw it and it was great great", "I saw it and it was bad", "I saw it twice, great",
             "You saw nothing", "Only three words"]
    gold = lambda ts: [t.count("great") - t.count("bad") for t in ts]  # a toy gold reward
    pairs = pairs_from_reviews(texts, gold, n_words=3, seed=0)
    # "I saw it" has three reviews (one pair, the third unpaired); the other groups have one review each
    assert len(pairs) == 1
    pair = pairs[0]
    assert pair["prompt"] == "I saw it"
    assert pair["chosen_reward"] > pair["rejected_reward"]
    assert pair["prompt"] + pair["chosen"] in texts and pair["prompt"] + pair["rejected"] in texts
    assert pairs_from_reviews(texts, lambda ts: [0] * len(ts), n_words=3) == []  # ties give no pair


def test_mass_shift_and_top_changes(tiny_model, tokenizer):
    encoded, _ = encode_examples(tokenizer, ["The film", "A movie"], [" was great.", " was dull."])
    batch = pad_batch(encoded, tokenizer.pad_token_id)
    seen = {t for _, completion in encoded for t in completion}
    same = mass_shift(tiny_model, tiny_model, batch, seen)
    assert same.loc["policy"].tolist() == pytest.approx(same.loc["reference"].tolist())
    assert same.sum(axis=1).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    # a policy that puts all its mass on one never-seen token
    unseen = next(i for i in range(len(tokenizer)) if i not in seen)
    policy = copy.deepcopy(tiny_model)
    with torch.no_grad():
        policy.lm_head.weight.zero_()
        policy.lm_head.weight[unseen] = 0.0
        if getattr(policy.lm_head, "bias", None) is not None:
            policy.lm_head.bias.zero_()
        policy.transformer.ln_f.weight.zero_()
        policy.transformer.ln_f.bias.fill_(1.0)
        policy.lm_head.weight[unseen] = 100.0
    shifted = mass_shift(policy, tiny_model, batch, seen)
    # per completion: the masses summed over each row's positions add up to the shares mass_shift reports
    mass, positions = mass_per_completion(policy, batch, seen)
    assert mass.shape == (2, 3) and positions.tolist() == [int(m.sum()) for m in batch["completion_mask"][:, 1:]]
    assert mass.sum(1) == pytest.approx(positions, abs=1e-4)  # each position's three shares sum to 1
    assert (mass.sum(0) / positions.sum()).tolist() == pytest.approx(shifted.loc["policy"].tolist(), abs=1e-6)
    # cutting the batch into one-row chunks (to bound memory) changes nothing
    pd.testing.assert_frame_equal(mass_shift(policy, tiny_model, batch, seen, chunk_rows=1), shifted, atol=1e-6)
    assert shifted.loc["policy", "never-seen tokens"] == pytest.approx(1.0, abs=1e-4)
    changes = top_mass_changes(policy, tiny_model, batch, tokenizer, k=2)
    one_row = top_mass_changes(policy, tiny_model, batch, tokenizer, k=2, chunk_rows=1)
    assert one_row.change.tolist() == pytest.approx(changes.change.tolist(), abs=1e-6)
    assert changes.token.iloc[0] == repr(tokenizer.decode([unseen]))
    assert changes.change.iloc[0] > 0.9 and (changes.change.iloc[2:] < 0).all()


def test_known_word_share():
    reference = ["The film was great.", "I loved it"]
    # words: the, film, was, xqz, great, zzkk -> 4 of 6 known
    assert known_word_share(["The film was xqz", "great zzkk!"], reference) == pytest.approx(4 / 6)
    assert known_word_share(["", "123 !!"], reference) == 1.0
    known, total = known_word_counts(["The film was xqz", "great zzkk!", ""], reference)
    assert known.tolist() == [3, 1, 0] and total.tolist() == [4, 2, 0]
