"""The Bradley-Terry reward model: loss by hand, the head reads the last real token, training, accuracy."""

import math

import numpy as np
import pytest
import torch

from dpo_lab.reward_model import (
    RewardScorer,
    bradley_terry_loss,
    encode_texts,
    preference_accuracy,
    reward_model_from_lm,
    train_reward_model,
)


def test_bradley_terry_loss_on_a_fixed_batch():
    chosen = torch.tensor([2.0, 0.0, -1.0, 1.0])
    rejected = torch.tensor([1.0, 0.0, 1.0, -3.0])
    # -log sigma(d) = log(1 + exp(-d)) for d = 1, 0, -2, 4
    expected = [math.log(1 + math.exp(-1)), math.log(2), math.log(1 + math.exp(2)), math.log(1 + math.exp(-4))]
    assert bradley_terry_loss(chosen, rejected).tolist() == pytest.approx(expected, abs=1e-6)
    # centring adds c * (r_w + r_l)^2: sums 3, 0, 0, -2
    centred = bradley_terry_loss(chosen, rejected, center_coef=0.1).tolist()
    assert centred == pytest.approx([expected[0] + 0.9, expected[1], expected[2], expected[3] + 0.4], abs=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        bradley_terry_loss(chosen, rejected[:2])


def test_loss_depends_only_on_reward_differences():
    r_w, r_l = torch.tensor([0.3, -2.0]), torch.tensor([1.1, -2.5])
    assert torch.allclose(bradley_terry_loss(r_w, r_l), bradley_terry_loss(r_w + 7.0, r_l + 7.0))


def test_head_reads_the_last_real_token_whatever_the_padding(tiny_model, tokenizer):
    rm = reward_model_from_lm(tiny_model, seed=0).eval()
    ids, _ = encode_texts(tokenizer, ["The film was great.", "Dull."])
    with torch.no_grad():
        alone = [rm(torch.tensor([r]), torch.ones(1, len(r), dtype=torch.long)).item() for r in ids]
        # right padding, then left padding, of the same two rows
        width = max(map(len, ids))
        for side in ("right", "left"):
            input_ids = torch.full((2, width), tokenizer.pad_token_id)
            mask = torch.zeros((2, width), dtype=torch.long)
            for i, r in enumerate(ids):
                cols = slice(0, len(r)) if side == "right" else slice(width - len(r), width)
                input_ids[i, cols], mask[i, cols] = torch.tensor(r), 1
            assert rm(input_ids, mask).tolist() == pytest.approx(alone, abs=1e-5)
        # by hand: the head applied to the backbone's hidden state at the last token (the EOS)
        hidden = rm.backbone(torch.tensor([ids[0]])).last_hidden_state[0, -1]
        assert (hidden @ rm.head.weight[0] + rm.head.bias[0]).item() == pytest.approx(alone[0], abs=1e-5)
    assert ids[0][-1] == tokenizer.eos_token_id
    # the backbone is a copy: training the reward model leaves the language model alone
    assert rm.backbone is not tiny_model.base_model


def test_encode_texts_keeps_the_end_and_counts_truncation(tokenizer):
    ids, cut = encode_texts(tokenizer, ["a b c d e f g h", "a"], max_length=4)
    assert cut == 1 and len(ids[0]) == 4 and ids[0][-1] == tokenizer.eos_token_id
    full, _ = encode_texts(tokenizer, ["a b c d e f g h"])
    assert ids[0] == full[0][-4:]


PAIRS = [{"prompt": "The film", "chosen": " was wonderful and moving.", "rejected": " was awful and dull."},
         {"prompt": "I", "chosen": " loved the plot.", "rejected": " hated the plot."},
         {"prompt": "This movie", "chosen": " is really great.", "rejected": " is really bad."},
         {"prompt": "The acting", "chosen": " was superb.", "rejected": " was boring."}]


def test_training_fits_the_pairs_and_is_deterministic(tiny_model, tokenizer):
    torch.manual_seed(0)
    histories, scores = [], []
    for _ in range(2):
        rm = reward_model_from_lm(tiny_model, seed=0).requires_grad_(True)
        history = train_reward_model(rm, tokenizer, PAIRS, epochs=30, batch_size=4, lr=3e-3, seed=0, progress=False)
        histories.append(history)
        scores.append(RewardScorer(rm, tokenizer, batch_size=3)(["The film was wonderful.", "The film was awful."]))
    history = histories[0]
    assert history.loss.iloc[0] > history.loss.iloc[-1] and history.loss.iloc[-1] < 0.1
    assert history.accuracy.iloc[-1] == 1.0
    assert history.equals(histories[1]) and np.array_equal(scores[0], scores[1])
    accuracy, margins = preference_accuracy(RewardScorer(rm, tokenizer), PAIRS)
    assert accuracy == 1.0 and (margins > 0).all()


def test_scorer_batches_sorted_by_length_give_the_same_scores(tiny_model, tokenizer):
    rm = reward_model_from_lm(tiny_model, seed=1)
    texts = ["A film.", "The film was wonderful and moving and great.", "Dull.", "I loved it."]
    one_by_one = np.concatenate([RewardScorer(rm, tokenizer)([t]) for t in texts])
    assert np.allclose(RewardScorer(rm, tokenizer, batch_size=2)(texts), one_by_one, atol=1e-5)
    scorer = RewardScorer(rm, tokenizer)
    offset = scorer.center(texts)
    assert offset == pytest.approx(one_by_one.mean(), abs=1e-5)
    assert abs(scorer(texts).mean()) < 1e-5


def test_preference_accuracy_by_hand_and_bad_input():
    lengths = lambda texts: np.array([float(len(t)) for t in texts])  # a "reward": longer is better
    pairs = [{"prompt": "x", "chosen": "aaa", "rejected": "a"},  # right
             {"prompt": "x", "chosen": "a", "rejected": "aaa"},  # wrong
             {"prompt": "x", "chosen": "bb", "rejected": "aa"}]  # tie: one half
    accuracy, margins = preference_accuracy(lengths, pairs)
    assert accuracy == pytest.approx(1.5 / 3) and margins.tolist() == [2.0, -2.0, 0.0]
    with pytest.raises(ValueError, match="pair 1: field 'rejected'"):
        preference_accuracy(lengths, [pairs[0], {"prompt": "x", "chosen": "a", "rejected": None}])
    with pytest.raises(ValueError, match="at least one pair"):
        preference_accuracy(lengths, [])
