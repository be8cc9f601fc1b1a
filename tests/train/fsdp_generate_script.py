"""Launched by test_train_grpo_ddp under FSDP on 2 CPU processes: each process samples a
different number of tokens from the FSDP policy on unsharded weights (as GRPO's processes
do), then all train on what they sampled. argv: model, output folder; writes the sampled ids
per step and rank (samples.jsonl) and the trained weights (final/)."""

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from launching import fsdp_on_cpu

from thinkrl.models import load_model, load_tokenizer
from thinkrl.processes import exit_when_done
from thinkrl.rollout.base import SamplingParams
from thinkrl.rollout.transformers_engine import TransformersEngine
from thinkrl.train.sharding import full_states, unsharded


def main() -> None:
    torch.set_num_threads(1)
    fsdp_on_cpu()
    accelerator = Accelerator()
    model, tokenizer = load_model(sys.argv[1]), load_tokenizer(sys.argv[1])
    out = Path(sys.argv[2])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model, optimizer = accelerator.prepare(model, optimizer)
    engine = TransformersEngine(model, tokenizer, batch_size=4)
    rank = accelerator.process_index
    for step in range(2):
        with unsharded(accelerator, model):
            completions = engine.generate(["12+3="], SamplingParams(n=1, max_new_tokens=2 + 14 * rank, seed=rank))
        ids = completions[0].prompt_ids + completions[0].completion_ids
        batch = torch.tensor([ids])
        accelerator.backward(model(input_ids=batch, labels=batch).loss)
        optimizer.step()
        optimizer.zero_grad()
        with open(out / "samples.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "rank": rank, "ids": ids}) + "\n")
    state, _ = full_states(accelerator, model)
    if accelerator.is_main_process:
        model.save_pretrained(out / "final", state_dict=state)


if __name__ == "__main__":
    exit_when_done(main)
