"""Dynamic batching: requests that arrive close together share one `model.generate` call.

One worker thread owns the model. It waits for a first request, keeps collecting for `batch_wait` seconds (or until
`max_batch_size` requests are waiting), left-pads the prompts into one batch and generates. Rows finish on their
own: a stopping criterion looks at every new token, ends a row at EOS, at a stop string, at its own `max_new_tokens`
or when its client went away, and sends text deltas to the row's owner as they are produced. `generate` stops as
soon as every row has finished. Requests with different sampling settings cannot share a `generate` call; they wait
for the next batch. This is static batching per call (no continuous batching): a request that arrives while a batch
runs waits for that batch to end.

Events sent to a job's `emit` callback, from the worker thread:
    {"type": "delta", "text": str}                                   new text, in order
    {"type": "done", "finish_reason": "stop" | "length" | "cancelled", "text": str, "completion_tokens": int}
    {"type": "error", "message": str}                                generation failed; no more events follow
"""

import copy
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from llava_hf.serving.inference import pad_token_id


@dataclass
class GenerationJob:
    """One request's prompt, sampling settings and progress. `input_ids` is `[T]`, `pixel_values` `[N, 3, H, W]`
    (LLaVA-1.6: `[N, tiles, 3, H, W]` with `image_sizes` `[N, 2]`, (height, width) per image)."""

    input_ids: torch.Tensor
    pixel_values: torch.Tensor | None
    max_new_tokens: int
    emit: Callable[[dict], None]
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)
    arrival: float = field(default_factory=time.monotonic)
    # progress, written by the worker thread only
    tokens: list[int] = field(default_factory=list)
    emitted: str = ""
    finish_reason: str | None = None
    image_sizes: torch.Tensor | None = None

    def sampling_key(self) -> tuple:
        """Jobs with equal keys can share a `generate` call."""
        return (self.temperature, self.top_p) if self.temperature > 0 else (0.0,)


class RowTracker(StoppingCriteria):
    """Per-row bookkeeping inside `generate`: called after every decoding step with the ids so far.

    Returns which rows are finished, so `generate` pads them and stops once all are done.
    """

    def __init__(self, jobs: list[GenerationJob], tokenizer, eos_token_ids: set[int]):
        self.jobs = jobs
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        new_tokens = input_ids[:, -1].tolist()  # [B]
        for job, token in zip(self.jobs, new_tokens):
            if job.finish_reason is not None:
                continue
            if job.cancelled.is_set():
                self.finish(job, "cancelled")
                continue
            job.tokens.append(token)
            if token in self.eos_token_ids:
                self.finish(job, "stop")
                continue
            text = self.decode(job)
            stop_at = min((index for index in (text.find(stop) for stop in job.stop) if index >= 0), default=-1)
            if stop_at >= 0:
                self.finish(job, "stop", text[:stop_at])
            elif len(job.tokens) >= job.max_new_tokens:
                self.finish(job, "length", text)
            else:
                self.send(job, text[: len(text) - held_back(text, job.stop)])
        return torch.tensor([job.finish_reason is not None for job in self.jobs], device=input_ids.device)

    def decode(self, job: GenerationJob) -> str:
        # Templates like vicuna_v1 end the prompt at "ASSISTANT:" and the model writes " answer": the space belongs
        # to the template's layout, not to the answer.
        tokens = [token for token in job.tokens if token not in self.eos_token_ids]
        return self.tokenizer.decode(tokens, skip_special_tokens=True).lstrip()

    def send(self, job: GenerationJob, text: str):
        # A byte-level BPE token can end in the middle of a UTF-8 character: hold the replacement character back
        # until the next token completes it.
        text = text.rstrip("\ufffd") if job.finish_reason is None else text
        if len(text) > len(job.emitted) and text.startswith(job.emitted):
            job.emit({"type": "delta", "text": text[len(job.emitted) :]})
            job.emitted = text

    def finish(self, job: GenerationJob, reason: str, text: str | None = None):
        job.finish_reason = reason
        if reason != "cancelled":
            text = self.decode(job) if text is None else text
            self.send(job, text)
            job.emitted = text
        job.emit({"type": "done", "finish_reason": reason, "text": job.emitted, "completion_tokens": len(job.tokens)})


def held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters of `text` could be the start of a stop string, so must not be streamed yet."""
    longest = 0
    for stop in stops:
        for length in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:length]):
                longest = length
                break
    return longest


class BatchingEngine:
    """Owns the model in one worker thread and runs submitted jobs in dynamic batches.

    Args:
        model: a loaded image-text-to-text model in eval mode.
        tokenizer: its tokenizer (copied: the worker decodes while request threads tokenize, and a Rust tokenizer
            being reconfigured by one thread raises "Already borrowed" in another).
        max_batch_size: most jobs per `generate` call (1 = one request at a time).
        batch_wait: seconds to keep collecting after the first job of a batch arrives.
    """

    def __init__(self, model, tokenizer, max_batch_size: int = 8, batch_wait: float = 0.01):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}.")
        self.model = model
        self.tokenizer = copy.deepcopy(tokenizer)
        self.max_batch_size = max_batch_size
        self.batch_wait = batch_wait
        self.pad_token_id = pad_token_id(tokenizer)
        eos = model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        self.eos_token_ids = set(eos) | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())
        self.pending: deque[GenerationJob] = deque()
        self.condition = threading.Condition()
        self.stopping = False
        self.batches_run = 0
        self.cancelled_rows = 0  # rows ended because their client went away
        self.running: list[GenerationJob] = []  # the batch being generated
        self.recent_batch_sizes: deque[int] = deque(maxlen=256)  # rows per generate call, bounded so memory stays flat
        self.thread = threading.Thread(target=self._loop, name="llava-hf-batcher", daemon=True)

    def start(self):
        self.thread.start()

    def stop(self):
        """Finish the running batch, fail the waiting jobs, and end the worker thread."""
        with self.condition:
            self.stopping = True
            waiting = list(self.pending)
            self.pending.clear()
            self.condition.notify_all()
        for job in waiting:
            job.emit({"type": "error", "message": "the server is shutting down"})
        if self.thread.is_alive():
            self.thread.join()

    def submit(self, job: GenerationJob):
        with self.condition:
            if self.stopping:
                raise RuntimeError("the server is shutting down")
            self.pending.append(job)
            self.condition.notify_all()

    @property
    def queued(self) -> int:
        return len(self.pending)

    @property
    def generating(self) -> int:
        """Rows of the running batch still generating."""
        return sum(job.finish_reason is None for job in self.running)

    def _next_batch(self) -> list[GenerationJob]:
        with self.condition:
            while True:
                while not self.pending and not self.stopping:
                    self.condition.wait()
                if self.stopping:
                    return []
                key = self.pending[0].sampling_key()
                deadline = self.pending[0].arrival + self.batch_wait
                while not self.stopping:
                    compatible = sum(job.sampling_key() == key for job in self.pending)
                    remaining = deadline - time.monotonic()
                    if compatible >= self.max_batch_size or remaining <= 0:
                        break
                    self.condition.wait(timeout=remaining)
                batch, rest = [], deque()
                for job in self.pending:
                    if job.cancelled.is_set():
                        self.cancelled_rows += 1
                        job.emit({"type": "done", "finish_reason": "cancelled", "text": "", "completion_tokens": 0})
                    elif job.sampling_key() == key and len(batch) < self.max_batch_size:
                        batch.append(job)
                    else:
                        rest.append(job)
                self.pending = rest
                if batch:
                    return batch

    def _loop(self):
        while batch := self._next_batch():
            self.running = batch
            try:
                self._generate(batch)
            except Exception as error:  # one failed batch must not end the worker: report it to its jobs
                for job in batch:
                    if job.finish_reason is None:
                        job.finish_reason = "error"
                        job.emit({"type": "error", "message": f"generation failed: {type(error).__name__}: {error}"})
            self.running = []
            self.cancelled_rows += sum(job.finish_reason == "cancelled" for job in batch)

    @torch.inference_mode()
    def _generate(self, jobs: list[GenerationJob]):
        self.batches_run += 1
        self.recent_batch_sizes.append(len(jobs))
        width = max(len(job.input_ids) for job in jobs)
        input_ids = torch.full((len(jobs), width), self.pad_token_id, dtype=torch.long)  # [B, T], left-padded
        attention_mask = torch.zeros((len(jobs), width), dtype=torch.long)
        for row, job in enumerate(jobs):
            input_ids[row, width - len(job.input_ids) :] = job.input_ids
            attention_mask[row, width - len(job.input_ids) :] = 1
        # The model fills image-token positions row by row, so images concatenated in row order land in their rows.
        images = [job.pixel_values for job in jobs if job.pixel_values is not None]
        inputs = dict(input_ids=input_ids.to(self.model.device), attention_mask=attention_mask.to(self.model.device))
        if images:
            if any(job.image_sizes is not None for job in jobs):  # AnyRes: pad each image to the batch's most tiles
                tiles = max(image.shape[1] for image in images)
                images = [
                    torch.nn.functional.pad(image, (0, 0, 0, 0, 0, 0, 0, tiles - image.shape[1])) for image in images
                ]
                sizes = [job.image_sizes for job in jobs if job.image_sizes is not None]
                inputs["image_sizes"] = torch.cat(sizes).to(self.model.device)
            inputs["pixel_values"] = torch.cat(images).to(self.model.device, self.model.dtype)
        sampling = dict(do_sample=False, temperature=None, top_p=None, top_k=None)
        if jobs[0].temperature > 0:
            sampling = dict(do_sample=True, temperature=jobs[0].temperature, top_p=jobs[0].top_p, top_k=None)
        tracker = RowTracker(jobs, self.tokenizer, self.eos_token_ids)
        self.model.generate(
            **inputs,
            **sampling,
            max_new_tokens=max(job.max_new_tokens for job in jobs),
            stopping_criteria=StoppingCriteriaList([tracker]),
            pad_token_id=self.pad_token_id,
        )
        for job in jobs:  # generate can also end on the checkpoint's own limits (e.g. generation_config.max_length)
            if job.finish_reason is None:
                tracker.finish(job, "length")
