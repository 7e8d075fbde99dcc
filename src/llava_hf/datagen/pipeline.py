"""The generation run: symbolic images -> teacher requests -> validated LLaVA records, resumable and budgeted.

`run_generation(config)` does, top to bottom:
1. read and select the images; load the prompt set; check the output folder belongs to the same run settings;
2. open the journal and skip every (image, type) it already holds an accepted output for (or one whose attempts are
   used up); what is left becomes jobs;
3. `concurrency` async workers take jobs: build the messages, ask the teacher, parse and validate, journal the result
   (accepted or rejected with its reason), and retry a rejected output up to `max_attempts` outputs in all;
4. stop dispatching once the token/cost budget is spent (requests in flight still finish and are journaled);
5. write the outputs atomically from the journal, so a re-run after a kill rebuilds exactly the same files.

Output folder:
- `llava_instruct.json`  LLaVA instruction data, `[{"id", "image", "conversations", "generation"}]`, ids
  `<image id>_<type>`; `generation` holds the type, prompt version, teacher kind and model, sampling, usage, attempt
  (loaders of the original format ignore extra keys)
- `llava_caption.json`   stage-1 caption data (a brief-description instruction + one caption per image), no teacher
- `rejects.jsonl`        every rejected output with its reason;  `summary.json`  counts, rejects, tokens, cost
- `journal.jsonl`        the resume journal (`utils.io.JsonlLog`);   `run.json`  the settings the folder was started with
- `dataset/`             the instruction data as a `datasets` dataset, with `save_dataset`
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from ..utils.endpoints import ChatClient, ChatError, ChatResult, TeacherEndpointArguments
from ..utils.io import JsonlLog, atomic_write, read_jsonl, remove_leftovers
from .inputs import SymbolicImage, read_coco_images, read_jsonl_images, select_images
from .parsing import parse_output
from .prompts import TASK_TYPES, PromptSet, build_messages, load_prompt_set, stable_choice
from .rule_teacher import RuleBasedTeacher


@dataclass
class GenerateDataArguments(TeacherEndpointArguments):
    """Settings of one run; the CLI flags are these fields (`--output-dir` for `output_dir`, ...), with the teacher's
    endpoint (`--teacher-base-url`, `--teacher-model`, `--teacher-api-key-env`) used by `--teacher openai`."""

    output_dir: str = field(metadata={"help": "folder for outputs and the resume journal; re-run to resume"})
    input: str | None = field(default=None, metadata={"help": "JSONL of {id, image, captions, instances} records"})
    coco_captions: str | None = field(default=None, metadata={"help": "COCO captions_*.json (instead of --input)"})
    coco_instances: str | None = field(default=None, metadata={"help": "COCO instances_*.json with the boxes"})
    types: list[str] = field(default_factory=lambda: list(TASK_TYPES), metadata={"help": "types to generate"})
    limit: int | None = field(default=None, metadata={"help": "use only this many images (the first ones)"})
    sample_seed: int | None = field(default=None, metadata={"help": "with --limit: a random sample, by this seed"})
    teacher: Literal["openai", "rule-based"] = field(
        default="openai", metadata={"help": "'openai' (any OpenAI-compatible API) or 'rule-based'"}
    )
    concurrency: int = field(default=8, metadata={"help": "requests in flight at once"})
    timeout: float = field(default=120.0, metadata={"help": "seconds to wait for the endpoint (connect, each read)"})
    max_retries: int = field(default=5, metadata={"help": "HTTP retries on 429/5xx/timeouts, with backoff"})
    temperature: float = field(default=0.7, metadata={"help": "teacher sampling temperature"})
    top_p: float | None = field(default=None, metadata={"help": "teacher nucleus sampling (endpoint default if unset)"})
    max_tokens: int = field(default=1024, metadata={"help": "most completion tokens per reply; longer is rejected"})
    max_attempts: int = field(default=3, metadata={"help": "outputs per image and type before giving up on it"})
    max_total_tokens: int | None = field(default=None, metadata={"help": "token budget over all runs of this folder"})
    max_cost_usd: float | None = field(default=None, metadata={"help": "cost budget over all runs of this folder"})
    usd_per_million_prompt_tokens: float = field(default=0.0, metadata={"help": "price, for the cost budget"})
    usd_per_million_completion_tokens: float = field(default=0.0, metadata={"help": "price, for the cost budget"})
    prompts_dir: str | None = field(default=None, metadata={"help": "folder with your own copies of the prompt files"})
    seed: int = field(default=0, metadata={"help": "seed for the instruction and caption picked per image"})
    save_dataset: bool = field(default=False, metadata={"help": "also save a `datasets` dataset under dataset/"})

    def __post_init__(self):
        unknown = sorted(set(self.types) - set(TASK_TYPES))
        if unknown:
            raise ValueError(f"unknown types {unknown}; choose from {list(TASK_TYPES)}")
        if (self.input is None) == (self.coco_captions is None):
            raise ValueError("give exactly one input: --input records.jsonl, or --coco-captions (+ --coco-instances)")
        if self.teacher not in TEACHERS:
            raise ValueError(f"unknown teacher {self.teacher!r}; choose from {sorted(TEACHERS)}")
        if self.teacher == "openai" and (self.teacher_base_url is None or self.teacher_model is None):
            raise ValueError(
                "the openai teacher needs --teacher-base-url (e.g. https://api.openai.com/v1) and --teacher-model"
            )

    def sampling(self) -> dict:
        sampling = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.top_p is not None:
            sampling["top_p"] = self.top_p
        return sampling


class LLMTeacher:
    """A teacher behind an OpenAI-compatible endpoint: sends the prompt messages, returns the reply."""

    kind = "llm"
    deterministic = False

    def __init__(self, config: GenerateDataArguments):
        self.client = ChatClient.from_settings(
            config.teacher_endpoint(
                timeout=config.timeout, max_retries=config.max_retries, concurrency=config.concurrency
            )
        )
        self.model = config.teacher_model
        self.sampling = config.sampling()

    async def answer(self, image: SymbolicImage, task_type: str, messages: list[dict]) -> ChatResult:
        return await self.client.complete(messages, **self.sampling)


# teacher name -> constructor; both give `kind`, `model`, `sampling`, `deterministic` and `async answer(...)`.
TEACHERS = {"openai": LLMTeacher, "rule-based": lambda config: RuleBasedTeacher()}


@dataclass
class RunState:
    """What the journal says and what this run did, for dispatch, the budget and the summary."""

    accepted: dict = field(default_factory=dict)  # (image id, type) -> journal entry
    attempts: Counter = field(default_factory=Counter)  # (image id, type) -> outputs journaled
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests_this_run: int = 0
    failures: list = field(default_factory=list)  # (key, message) of requests that failed at the HTTP level
    stopped_by_budget: bool = False

    def add(self, entry: dict) -> None:
        job = (entry["id"], entry["type"])
        self.attempts[job] += 1
        self.prompt_tokens += entry["usage"]["prompt_tokens"]
        self.completion_tokens += entry["usage"]["completion_tokens"]
        if entry["status"] == "accepted":
            self.accepted.setdefault(job, entry)


def cost_usd(config: GenerateDataArguments, prompt_tokens: int, completion_tokens: int) -> float:
    return (
        prompt_tokens * config.usd_per_million_prompt_tokens
        + completion_tokens * config.usd_per_million_completion_tokens
    ) / 1e6


def budget_spent(config: GenerateDataArguments, state: RunState) -> bool:
    tokens = state.prompt_tokens + state.completion_tokens
    if config.max_total_tokens is not None and tokens >= config.max_total_tokens:
        return True
    cost = cost_usd(config, state.prompt_tokens, state.completion_tokens)
    return config.max_cost_usd is not None and cost >= config.max_cost_usd


def load_images(config: GenerateDataArguments) -> list[SymbolicImage]:
    if config.input is not None:
        images = read_jsonl_images(config.input)
    else:
        images = read_coco_images(config.coco_captions, config.coco_instances)
    return select_images(images, config.limit, config.sample_seed)


def run_generation(config: GenerateDataArguments, progress: bool | None = None) -> dict:
    """Run (or resume) generation into `config.output_dir`; returns the summary (also written to summary.json).

    `progress`: show a tqdm bar (None = only on a terminal). Safe to call again after any interruption.
    """
    started = time.monotonic()
    images = load_images(config)
    prompts = load_prompt_set(config.prompts_dir)
    teacher = TEACHERS[config.teacher](config)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    max_attempts = 1 if teacher.deterministic else config.max_attempts

    # The journal: one line per finished request (accepted or rejected), fsync'd before the request counts as done,
    # so a re-run after a kill skips exactly the finished ones. It holds the folder's lock from here on.
    with JsonlLog(output_dir / "journal.jsonl", lock=True) as journal:
        check_run_settings(output_dir, config, teacher, prompts)
        remove_leftovers(output_dir)  # from a run killed inside atomic_write
        state = RunState()
        for entry in journal.entries:
            state.add(entry)
        jobs = [
            (image, task_type)
            for image in images
            for task_type in config.types
            if (image.id, task_type) not in state.accepted and state.attempts[(image.id, task_type)] < max_attempts
        ]
        if jobs:
            asyncio.run(_run_jobs(jobs, config, teacher, prompts, journal, state, max_attempts, progress))
        summary = write_outputs(output_dir, images, config, prompts, journal.path, state, max_attempts)
    summary["teacher"] = {"kind": teacher.kind, "model": teacher.model}
    summary["wall_seconds"] = round(time.monotonic() - started, 3)
    atomic_write(output_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


async def _run_jobs(jobs, config, teacher, prompts, journal, state, max_attempts, progress) -> None:
    from tqdm.auto import tqdm

    queue = list(reversed(jobs))  # pop() from the end = input order
    bar = tqdm(total=len(jobs), unit="job", desc="generate-data", disable=None if progress is None else not progress)
    rejects = Counter()

    async def worker():
        while queue and not state.stopped_by_budget:
            image, task_type = queue.pop()
            messages = build_messages(prompts.templates[task_type], image)
            instruction = stable_choice(prompts.detailed_instructions, config.seed, image.id, "detail")
            job = (image.id, task_type)
            while state.attempts[job] < max_attempts:
                if budget_spent(config, state):
                    state.stopped_by_budget = True
                    return
                key = f"{image.id}/{task_type}/{state.attempts[job]}"
                state.requests_this_run += 1
                try:
                    result = await teacher.answer(image, task_type, messages)
                except ChatError as error:
                    # Not journaled: the request did not finish, so a re-run sends it again.
                    state.failures.append((key, str(error)))
                    break
                conversations, reason = parse_output(task_type, result.text, result.finish_reason, instruction)
                entry = {
                    "key": key,
                    "id": image.id,
                    "type": task_type,
                    "attempt": state.attempts[job],
                    "status": "accepted" if reason is None else "rejected",
                    "reason": reason,
                    "text": result.text,
                    "finish_reason": result.finish_reason,
                    "teacher_kind": teacher.kind,
                    "model": result.model or teacher.model,
                    "sampling": teacher.sampling,
                    "prompt_version": prompts.version(task_type),
                    "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens},
                    "conversations": conversations,
                }
                journal.append(entry)  # the request counts as done only once this returns
                state.add(entry)
                if reason is None:
                    break
                rejects[reason] += 1
            bar.update(1)
            bar.set_postfix(failed=len(state.failures), rejected=sum(rejects.values()), refresh=False)

    await asyncio.gather(*(worker() for _ in range(min(config.concurrency, len(jobs)))))
    bar.close()


def check_run_settings(output_dir: Path, config: GenerateDataArguments, teacher, prompts: PromptSet) -> None:
    """Refuse to mix outputs of different teachers, prompts or sampling in one folder (records would silently differ
    in provenance); the first run writes `run.json`, later runs must match it."""
    settings = {
        "teacher_kind": teacher.kind,
        "model": teacher.model,
        "sampling": teacher.sampling,
        "prompt_versions": {task_type: prompts.version(task_type) for task_type in TASK_TYPES},
        "seed": config.seed,
    }
    path = output_dir / "run.json"
    if not path.exists():
        atomic_write(path, json.dumps(settings, indent=2) + "\n")
        return
    previous = json.loads(path.read_text(encoding="utf-8"))
    changed = sorted(name for name in settings if previous.get(name) != settings[name])
    if changed:
        raise ValueError(
            f"{output_dir} was started with other settings ({', '.join(changed)} differ from {path}); "
            "re-run with the same settings to resume, or use a new --output-dir"
        )


def write_outputs(output_dir, images, config, prompts, journal_path, state, max_attempts) -> dict:
    """Rebuild every output file from the journal (atomically) and return the summary."""
    records = []
    for image in images:
        for task_type in config.types:
            entry = state.accepted.get((image.id, task_type))
            if entry is None:
                continue
            records.append(
                {
                    "id": f"{image.id}_{task_type}",
                    "image": image.image,
                    "conversations": entry["conversations"],
                    "generation": {
                        "type": task_type,
                        "prompt_version": entry["prompt_version"],
                        "teacher_kind": entry["teacher_kind"],
                        "teacher_model": entry["model"],
                        "sampling": json.dumps(entry["sampling"], sort_keys=True),
                        "usage": entry["usage"],
                        "attempt": entry["attempt"],
                    },
                }
            )
    atomic_write(output_dir / "llava_instruct.json", json.dumps(records, indent=1, ensure_ascii=False) + "\n")
    captions = caption_records(images, prompts, config.seed)
    atomic_write(output_dir / "llava_caption.json", json.dumps(captions, indent=1, ensure_ascii=False) + "\n")

    image_ids = {image.id for image in images}
    rejected = [
        {key: entry[key] for key in ("key", "id", "type", "attempt", "reason", "finish_reason", "model", "text")}
        for entry in read_jsonl(journal_path)  # includes what this run appended
        if entry["status"] == "rejected" and entry["id"] in image_ids
    ]
    atomic_write(output_dir / "rejects.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejected))
    if config.save_dataset:
        save_as_dataset(records, output_dir / "dataset")

    all_jobs = [(image.id, task_type) for image in images for task_type in config.types]
    gave_up = [job for job in all_jobs if job not in state.accepted and state.attempts[job] >= max_attempts]
    return {
        "images": len(images),
        "records": dict(Counter(record["generation"]["type"] for record in records)),
        "caption_records": len(captions),
        "rejects": dict(Counter(entry["reason"] for entry in rejected)),
        "gave_up": len(gave_up),
        "pending": len(all_jobs) - len(state.accepted.keys() & set(all_jobs)) - len(gave_up),
        "failed_requests_this_run": len(state.failures),
        "failures": [f"{key}: {message}" for key, message in state.failures[:20]],
        "requests_this_run": state.requests_this_run,
        "tokens": {"prompt": state.prompt_tokens, "completion": state.completion_tokens},
        "cost_usd": round(cost_usd(config, state.prompt_tokens, state.completion_tokens), 6),
        "stopped_by_budget": state.stopped_by_budget,
        "config": asdict(config),
    }


def caption_records(images: list[SymbolicImage], prompts: PromptSet, seed: int) -> list[dict]:
    """Stage-1 data (LLaVA's LCS/CC3M format): one record per image, a brief-description instruction and a caption,
    both picked by a stable hash so re-runs agree."""
    records = []
    for image in images:
        if not image.captions:
            continue
        instruction = stable_choice(prompts.brief_instructions, seed, image.id, "brief")
        caption = stable_choice(image.captions, seed, image.id, "caption")
        records.append(
            {
                "id": f"{image.id}_caption",
                "image": image.image,
                "conversations": [
                    {"from": "human", "value": f"<image>\n{instruction}"},
                    {"from": "gpt", "value": caption},
                ],
            }
        )
    return records


def save_as_dataset(records: list[dict], folder: Path) -> None:
    """The instruction records as a `datasets.Dataset` saved to `folder` (load with `datasets.load_from_disk`)."""
    try:
        import datasets
    except ImportError:
        raise ImportError("save_dataset needs the `datasets` package: pip install 'llava_hf[datagen]'") from None
    datasets.Dataset.from_list(records).save_to_disk(str(folder))
