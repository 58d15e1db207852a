"""dpo_lab: the helper package of the DPO Lab course.

One concept a module; read any of them top to bottom:

* ``env``       profile, device, seeding, the set-up call of every notebook, its run time
* ``paths``     where the shipped data is: ``data/`` of a checkout, ``dpo_lab/_data`` of a wheel
* ``extras``    optional imports that name the extra to install
* ``data``      preference records, validation, JSONL / Dataset / Hub loaders
* ``tokenizer`` the course's own small tokenizer, shipped in ``data/tokenizer``
* ``models``    a tiny GPT-2 from scratch, or a Hub checkpoint, through one function; LoRA adapters
* ``collate``   tokenizing prompt + completion, masks, stacking chosen and rejected
* ``logprobs``  the log-probability of a completion given its prompt
* ``losses``    DPO and its variants
* ``precision`` one mixed-precision decision (bf16, fp16 with loss scaling, fp32) for every loop
* ``train``     SFT and DPO training loops as plain functions
* ``reward_model`` a Bradley-Terry reward model: the first stage of the RLHF pipeline DPO replaces
* ``rloo``      RLOO, REINFORCE with a leave-one-out baseline and a KL penalty
* ``best_of_n`` best-of-N sampling and its expected gold reward for every N
* ``failure_modes`` tools that reproduce and diagnose how preference optimisation fails
* ``sampling``  batched generation with the KV cache
* ``evaluate``  samples with their ids, KL to the reference, win rates
* ``cache``     config-keyed folders under runs/ for work notebooks share
* ``costs``     what a method costs: wall and CPU time, peak memory, models held, samples drawn
* ``bench``     the cost of a DPO step: dpo_lab against TRL, on synthetic pairs
* ``sizing``    ``python -m dpo_lab.sizing``: each full-profile stage's peak memory on a T4, computed
* ``sandbox``   run model-written code against unit tests in a child the kernel confines
* ``sandbox_process`` one sandbox child's life: start it, read it, kill its group, delete its folder
* ``diffusion`` a tiny DDPM: noise schedule, training, sampler, and the Diffusion-DPO loss
* ``denoisers`` the networks a DDPM trains: a residual MLP and a small UNet
* ``tasks``     one module a task: data, gold reward, Hub mapping
* ``claims``    every claim about a result, checked and recorded in one place
* ``stats``     95% intervals for claims: Wilson, and the (paired) bootstrap
* ``seeds``     ``python -m dpo_lab.seeds``: notebooks rerun at other seeds, their headline claims
* ``results``   saving a notebook's headline numbers
* ``plotting``  plots used by more than one notebook
* ``progress``  the one progress bar: plain text, so a saved notebook shows it finished
* ``fork``      ``python -m dpo_lab.fork OWNER/REPO``: set-up cells and Colab badges for a fork
* ``syllabus``  ``python -m dpo_lab.syllabus``: the README's table from the notebooks' runs
"""

__version__ = "0.1.0"
