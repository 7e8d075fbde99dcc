"""The dynamic batcher on the tiny model: batched rows equal one-at-a-time answers, per-row limits, stop, cancel."""

import queue
import threading

import pytest

from helpers.serving import reference_answer, tiny  # noqa: F401  (fixture)
from llava_hf.serving.batching import BatchingEngine, GenerationJob, held_back
from llava_hf.testing import make_image

QUESTIONS = [("What is it?", 1), ("Describe the scene in detail.", 2), ("Hi", None), ("Colour?", 3)]


def make_job(processor, question, seed, max_new_tokens, **kwargs):
    """A job plus the queue its events arrive on."""
    content = ([{"type": "image"}] if seed is not None else []) + [{"type": "text", "text": question}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    images = [make_image(seed)] if seed is not None else None
    inputs = processor(text=[text], images=images, return_tensors="pt")
    events = queue.Queue()
    job = GenerationJob(
        input_ids=inputs["input_ids"][0],
        pixel_values=inputs.get("pixel_values"),
        max_new_tokens=max_new_tokens,
        emit=events.put,
        **kwargs,
    )
    return job, events


def collect(events) -> tuple[str, dict]:
    """Concatenated deltas and the final event."""
    streamed = ""
    while (event := events.get(timeout=60))["type"] == "delta":
        streamed += event["text"]
    return streamed, event


@pytest.fixture
def engine(tiny):  # noqa: F811
    model, processor = tiny
    # A long wait so that jobs submitted back to back are certain to share one generate call.
    engine = BatchingEngine(model, processor.tokenizer, max_batch_size=4, batch_wait=0.5)
    engine.start()
    yield engine
    engine.stop()


def test_batched_rows_equal_unbatched_answers(tiny, engine):  # noqa: F811
    model, processor = tiny
    jobs = [make_job(processor, question, seed, max_new_tokens=12) for question, seed in QUESTIONS]
    for job, _ in jobs:
        engine.submit(job)
    results = [collect(events) for _, events in jobs]
    assert list(engine.recent_batch_sizes) == [4]
    for (question, seed), (streamed, done) in zip(QUESTIONS, results):
        expected = reference_answer(model, processor, question, seed, max_new_tokens=12)
        assert done["type"] == "done"
        assert done["text"].rstrip() == expected
        assert streamed == done["text"]  # the deltas add up to the final text
        assert done["completion_tokens"] <= 12


def test_each_row_keeps_its_own_token_limit(tiny, engine):  # noqa: F811
    _, processor = tiny
    jobs = [make_job(processor, "Describe it", 1, max_new_tokens=limit) for limit in (1, 3, 7)]
    for job, _ in jobs:
        engine.submit(job)
    finals = [collect(events)[1] for _, events in jobs]
    for limit, final in zip((1, 3, 7), finals):
        if final["finish_reason"] == "length":
            assert final["completion_tokens"] == limit
        else:  # the model ended the answer itself, within its limit
            assert final["finish_reason"] == "stop" and final["completion_tokens"] <= limit


def test_stop_string_truncates_and_is_never_streamed(tiny, engine):  # noqa: F811
    _, processor = tiny
    probe, events = make_job(processor, "What is it?", 1, max_new_tokens=12)
    engine.submit(probe)
    full = collect(events)[1]["text"]
    assert len(full) > 4, "the tiny model's answer is too short to cut"
    stop = full[3:5]
    job, events = make_job(processor, "What is it?", 1, max_new_tokens=12, stop=[stop])
    engine.submit(job)
    streamed, final = collect(events)
    assert final["finish_reason"] == "stop"
    assert final["text"] == full[: full.index(stop)]
    assert streamed == final["text"] and stop not in streamed


def test_cancelled_row_stops_while_others_finish(tiny, engine):  # noqa: F811
    model, processor = tiny
    keep, keep_events = make_job(processor, "What is it?", 1, max_new_tokens=12)
    drop, drop_events = make_job(processor, "Hi", None, max_new_tokens=12)
    drop.cancelled.set()
    engine.submit(keep)
    engine.submit(drop)
    assert collect(drop_events)[1]["finish_reason"] == "cancelled"
    assert collect(keep_events)[1]["text"].rstrip() == reference_answer(model, processor, "What is it?", 1, 12)


def test_different_sampling_settings_never_share_a_batch(tiny, engine):  # noqa: F811
    _, processor = tiny
    jobs = [make_job(processor, "Hi", None, 4), make_job(processor, "Hi", None, 4, temperature=0.7, top_p=0.9)]
    jobs.append(make_job(processor, "Hey", None, 4))
    for job, _ in jobs:
        engine.submit(job)
    for _, events in jobs:
        assert collect(events)[1]["type"] == "done"
    assert sorted(engine.recent_batch_sizes) == [1, 2]


def test_a_failing_batch_reports_an_error_and_the_worker_survives(tiny, engine):  # noqa: F811
    _, processor = tiny
    broken, broken_events = make_job(processor, "What is it?", 1, 4)
    broken.pixel_values = broken.pixel_values[:, :, :8]  # wrong image size: the vision tower raises
    engine.submit(broken)
    event = broken_events.get(timeout=60)
    assert event["type"] == "error" and event["message"].startswith("generation failed:")
    healthy, events = make_job(processor, "Hi", None, 4)
    engine.submit(healthy)
    assert collect(events)[1]["type"] == "done"


def test_stop_fails_waiting_jobs(tiny):  # noqa: F811
    model, processor = tiny
    engine = BatchingEngine(model, processor.tokenizer, max_batch_size=2, batch_wait=5.0)
    engine.start()
    job, events = make_job(processor, "Hi", None, 4)
    engine.submit(job)
    threading.Timer(0.1, engine.stop).start()
    assert events.get(timeout=30) == {"type": "error", "message": "the server is shutting down"}
    with pytest.raises(RuntimeError, match="shutting down"):
        engine.submit(job)


@pytest.mark.parametrize(
    "text, stops, expected",
    [("hello wor", ["world"], 3), ("hello", ["world"], 0), ("abc", ["cx", "bcx"], 2), ("a", ["ab"], 1)],
)
def test_held_back_covers_stop_prefixes(text, stops, expected):
    assert held_back(text, stops) == expected
