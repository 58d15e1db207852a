"""dpo_lab's DPO loss equals TRL's DPOTrainer loss on the same model, reference and pairs."""

import copy

import pytest
import torch

from dpo_lab.collate import collate_pairs, encode_pairs
from dpo_lab.data import SAMPLE_PATH, load_jsonl
from dpo_lab.models import tiny_gpt2
from dpo_lab.train import dpo_batch_loss, precompute_ref_logps

trl = pytest.importorskip("trl")


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_loss_matches_trl(tokenizer, tmp_path, loss_type):
    import datasets

    pairs = load_jsonl(SAMPLE_PATH)[:8]
    ref = tiny_gpt2(tokenizer, seed=0, n_layer=1, n_embd=32, n_head=2)
    policy = copy.deepcopy(ref)
    # Move the policy away from the reference so the loss is not just log 2.
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))

    beta = 0.3
    config = trl.DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=len(pairs), max_steps=1,
                           beta=beta, loss_type=[loss_type], report_to="none", use_cpu=True,
                           gradient_checkpointing=False, max_length=None, dataloader_num_workers=0,
                           logging_steps=1, save_strategy="no", disable_tqdm=True, bf16=False)
    trainer = trl.DPOTrainer(model=policy, ref_model=ref, args=config, processing_class=tokenizer,
                             train_dataset=datasets.Dataset.from_list(pairs))
    batch = next(iter(trainer.get_train_dataloader()))
    policy.eval()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch).item()

        chosen, rejected, _ = encode_pairs(tokenizer, pairs)
        average = loss_type == "ipo"
        ref_c, ref_r = precompute_ref_logps(ref, tokenizer, chosen, rejected, average=average)
        ours, _ = dpo_batch_loss(policy, collate_pairs(chosen, rejected, tokenizer.pad_token_id), ref_c, ref_r,
                                 beta=beta, loss_type=loss_type)
    assert ours.item() == pytest.approx(trl_loss, rel=1e-5)
    assert abs(ours.item() - 0.6931) > 1e-3  # the comparison is not the trivial step-0 value
