"""Asynchronous rollouts on one machine: a sampler process with its own copy of the policy
generates the rollouts of later steps while the trainer trains on the current one.

The trainer asks for generations ahead of time (`submit`), keyed by exactly the calls its
loop will make (`generation_calls`), and pushes its weights after each update (`load`), each
push a new policy version. The sampler answers in order, tagging every answer with the
version that produced it; the trainer's `PrefetchedEngine` serves those answers when the
loop asks for them, and generates in the sampler, at once, anything it did not foresee
(dynamic sampling's refills). The completions carry the sampler's log-probs, which the
rollout correction uses against the trainer's own (the samples are off-policy by the
staleness).
"""

from __future__ import annotations

import os
import queue
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from thinkrl.rollout.base import Completion, SamplingParams

Call = tuple[tuple[str, ...], SamplingParams]


@dataclass
class Answer:
    completions: list[Completion]
    version: int  # the policy version (optimiser updates applied) that sampled them
    seconds: float  # the sampler's time on them


def _serve(model_path: str, tokenizer_path: str | None, batch_size: int, threads: int, requests, answers) -> None:
    """The sampler process: weights and generation requests in order, answers out."""
    torch.set_num_threads(max(1, threads))
    from thinkrl.models import load_model, load_tokenizer
    from thinkrl.rollout.transformers_engine import TransformersEngine

    model = load_model(model_path)
    engine = TransformersEngine(model, load_tokenizer(tokenizer_path or model_path), batch_size=batch_size)
    version, parent = 0, os.getppid()
    while True:
        try:
            message = requests.get(timeout=2.0)
        except queue.Empty:
            if os.getppid() != parent:  # the trainer died (kill -9): do not linger as an orphan
                return
            continue
        if message[0] == "stop":
            return
        if message[0] == "weights":
            _, version, state = message
            model.load_state_dict(state, strict=False)
            continue
        _, key, prompts, params = message
        t0 = time.perf_counter()
        try:
            done = engine.generate(list(prompts), params)
            answers.put((key, [asdict(c) for c in done], version, time.perf_counter() - t0, None))
        except Exception as exc:  # noqa: BLE001 - the trainer re-raises it with the sampler's message
            answers.put((key, [], version, 0.0, f"{type(exc).__name__}: {exc}"))


class AsyncSampler:
    """The trainer's handle on the sampler process (spawned, so it shares no torch state)."""

    def __init__(self, model_path: str, tokenizer_path: str | None, batch_size: int, threads: int = 1) -> None:
        import torch.multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.requests, self.answers = ctx.Queue(), ctx.Queue()
        self.process = ctx.Process(target=_serve, args=(model_path, tokenizer_path, batch_size, threads,
                                                        self.requests, self.answers), daemon=True)
        self.process.start()
        self.submitted: dict[Call, int] = {}  # call -> submission number
        self.ready: dict[int, Answer] = {}
        self.next_id = 0
        self.waited_s = 0.0  # trainer time spent waiting for answers

    def load(self, model: Any, version: int) -> None:
        """The trainer's weights after `version` updates, for the generations submitted next."""
        from thinkrl.rollout.weights import merged_weights

        with merged_weights(model) as items:  # base-checkpoint names, a LoRA adapter merged in
            state = {name: tensor.detach().to("cpu", copy=True) for name, tensor in items}
        self.requests.put(("weights", version, state))

    def submit(self, calls: list[Call]) -> None:
        for call in calls:
            if call not in self.submitted:
                self.submitted[call] = self.next_id
                self.requests.put(("generate", self.next_id, call[0], call[1]))
                self.next_id += 1

    def take(self, call: Call) -> Answer:
        """The answer to `call` (submitting it now if it was not foreseen)."""
        self.submit([call])
        key = self.submitted.pop(call)
        t0 = time.perf_counter()
        while key not in self.ready:
            if not self.process.is_alive():
                raise RuntimeError("the sampler process died")
            try:
                got, rows, version, seconds, error = self.answers.get(timeout=5.0)
            except queue.Empty:  # check the process is alive, and wait on
                continue
            if error:
                raise RuntimeError(f"the sampler failed: {error}")
            self.ready[got] = Answer([Completion(**row) for row in rows], version, seconds)
        self.waited_s += time.perf_counter() - t0
        return self.ready.pop(key)

    def hold(self, call: Call, answer: Answer) -> None:
        """Keep `answer` for `call`, to be taken later (answers restored from a checkpoint)."""
        self.submitted[call] = self.next_id
        self.ready[self.next_id] = answer
        self.next_id += 1

    def close(self) -> None:
        if self.process.is_alive():
            self.requests.put(("stop",))
            self.process.join(timeout=30)
            if self.process.is_alive():
                self.process.kill()


class PrefetchedEngine:
    """A RolloutEngine over an AsyncSampler: `generate` returns what was generated ahead for
    exactly this call, and records the versions and times of what it served."""

    def __init__(self, sampler: AsyncSampler) -> None:
        self.sampler = sampler
        self.served: list[Answer] = []

    def generate(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        answer = self.sampler.take((tuple(prompts), params))
        self.served.append(answer)
        return answer.completions

    def take_served(self) -> list[Answer]:
        out, self.served = self.served, []
        return out


def answers_state(answers: list[Answer]) -> list[dict[str, Any]]:
    """JSON-ready answers, for a checkpoint (the generations in flight when it was written)."""
    return [{"version": a.version, "seconds": a.seconds, "completions": [asdict(c) for c in a.completions]}
            for a in answers]


def answers_from_state(rows: list[dict[str, Any]]) -> list[Answer]:
    return [Answer([Completion(**c) for c in row["completions"]], int(row["version"]), float(row["seconds"]))
            for row in rows]
