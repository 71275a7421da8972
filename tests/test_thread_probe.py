"""The intra-op thread count chosen by timing: the chooser on a fake clock, the tuner that applies it, and the
switches that turn it off."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

import pytest
import torch

from deepfake.system.hardware import HardwareManager
from deepfake.system.thread_probe import (
    BLOCK,
    PROBE_SHARE,
    ROUNDS,
    WINDOW,
    ThreadChooser,
    ThreadTuner,
    candidate_counts,
    paced,
    probe_schedule,
)
from deepfake.system.threads import probe_blocker

PROBE_UNITS = ROUNDS * BLOCK * 2  # units of one probe over two candidates


@pytest.fixture(autouse=True)
def restore_threads() -> Iterator[None]:
    """The tuner sets torch's intra-op count for the calling thread: give it back after each test."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def drive(chooser: ThreadChooser, clock: FakeClock, costs: dict[int, float], units: int) -> list[int]:
    """Run `units` units of work, each taking costs[count it runs at]; returns the counts they ran at."""
    ran = []
    for _ in range(units):
        ran.append(chooser.count)
        clock.t += costs[chooser.count]
        chooser.step()
    return ran


def test_it_picks_the_faster_count_after_one_untimed_warm_up() -> None:
    clock = FakeClock()
    chooser = ThreadChooser([1, 2], start=1, clock=clock)
    ran = drive(chooser, clock, {1: 0.050, 2: 0.040}, 1 + PROBE_UNITS + 3)
    assert ran[0] == 1  # the first unit: the formula's count, untimed
    assert ran[1 : 1 + PROBE_UNITS] == [c for c, _ in probe_schedule([1, 2])]
    assert ran[1 : 1 + PROBE_UNITS] == [1, 1, 1, 2, 2, 2, 2, 2, 2, 1, 1, 1]  # ascending, then descending
    assert ran[1 + PROBE_UNITS :] == [2, 2, 2] and not chooser.probing
    decision = chooser.decision
    assert decision is not None and decision.count == 2 and decision.units == PROBE_UNITS
    assert decision.per_unit == pytest.approx({1: 0.050, 2: 0.040})
    text = decision.describe("step")
    assert text == "2 intra-op (fastest; median per step over 12 steps: 1 thread 50 ms, 2 threads 40 ms)"


def test_a_clearly_slower_count_costs_one_block_not_the_whole_probe() -> None:
    """A loaded machine: two threads collapse (5x). Their first step ends the probe; a count 1.4x slower than
    another is dropped once its block is timed."""
    clock = FakeClock()
    chooser = ThreadChooser([1, 2], start=1, clock=clock)
    ran = drive(chooser, clock, {1: 0.040, 2: 0.200}, 1 + PROBE_UNITS)
    assert ran == [1, 1, 1, 1, 2] + [1] * (PROBE_UNITS - 4)
    assert chooser.decision is not None and (chooser.decision.count, chooser.decision.units) == (1, 4)
    assert not chooser.decision.cut_short and chooser.dropped == {2}
    clock = FakeClock()
    chooser = ThreadChooser([1, 2], start=2, clock=clock)  # the running count goes first: the yardstick
    ran = drive(chooser, clock, {1: 0.070, 2: 0.040}, 1 + PROBE_UNITS)
    assert ran == [2, 2, 2, 2, 1, 1, 1] + [2] * (PROBE_UNITS - 6)
    assert chooser.decision is not None and (chooser.decision.count, chooser.decision.units) == (2, 6)


def test_a_count_within_five_percent_loses_to_fewer_threads() -> None:
    clock = FakeClock()
    chooser = ThreadChooser([1, 2, 3, 4], start=2, clock=clock)
    drive(chooser, clock, {1: 0.100, 2: 0.080, 3: 0.077, 4: 0.090}, 1 + len(probe_schedule([1, 2, 3, 4])))
    assert chooser.count == 2 and chooser.decision is not None
    assert "as fast, fewer threads" in chooser.decision.describe("step")


def test_the_probe_uses_the_same_counts_whatever_the_timings_short_of_a_drop() -> None:
    """Exactness: which count a probe step runs at depends on the step; the clock only decides the end."""
    runs = []
    for costs in ({1: 0.04, 2: 0.05}, {1: 0.05, 2: 0.04}, {1: 0.03, 2: 0.03}):
        clock = FakeClock()
        runs.append(drive(ThreadChooser([1, 2], start=1, clock=clock), clock, costs, 1 + PROBE_UNITS))
    assert runs[0] == runs[1] == runs[2]


def test_a_resume_keeps_the_saved_count_and_does_not_probe() -> None:
    clock = FakeClock()
    first = ThreadChooser([1, 2], start=1, clock=clock)
    drive(first, clock, {1: 0.06, 2: 0.04}, 1 + PROBE_UNITS + 5)
    saved = first.state_dict()
    resumed = ThreadChooser([1, 2], start=1, clock=clock)  # a fresh process would probe again...
    resumed.load_state_dict(saved)
    ran = drive(resumed, clock, {1: 0.01, 2: 0.09}, PROBE_UNITS + 5)  # ...and here pick 1
    assert ran == [2] * (PROBE_UNITS + 5) and not resumed.probing and resumed.decision is None


def test_a_resume_mid_probe_replays_the_counts_and_the_choice() -> None:
    costs = {1: 0.06, 2: 0.04}
    clock = FakeClock()
    whole = drive(ThreadChooser([1, 2], start=1, clock=clock), clock, costs, 1 + PROBE_UNITS + 4)
    clock = FakeClock()
    first = ThreadChooser([1, 2], start=1, clock=clock)
    head = drive(first, clock, costs, 6)  # stopped inside the probe: the checkpoint holds its position
    assert first.probing
    resumed = ThreadChooser([1, 2], start=1, clock=FakeClock())
    resumed.load_state_dict(first.state_dict())
    clock = resumed.clock  # a new process: the first unit after the resume is not timed
    assert isinstance(clock, FakeClock)
    tail = drive(resumed, clock, costs, len(whole) - 6)
    assert head + tail == whole and resumed.count == 2


def test_settle_ends_a_probe_with_what_was_timed() -> None:
    clock = FakeClock()
    chooser = ThreadChooser([1, 2], start=2, clock=clock)
    drive(chooser, clock, {1: 0.03, 2: 0.05}, 1 + 5)  # warm-up, a block at 2, then 1's first timed step
    assert {c: pytest.approx(t) for c, t in chooser.samples.items()} == {2: [0.05, 0.05], 1: [0.03]}
    assert chooser.settle() == 1 and not chooser.probing
    assert chooser.decision is not None and chooser.decision.cut_short
    untimed = ThreadChooser([1, 2], start=2, clock=clock)
    drive(untimed, clock, {1: 0.03, 2: 0.05}, 2)  # nothing timed yet: back to the start count
    assert untimed.probing and untimed.settle() == 2


def test_adapt_threads_probes_again_when_the_step_time_drifts() -> None:
    clock = FakeClock()
    chooser = ThreadChooser([1, 2], start=1, clock=clock, adapt=True, drift=0.25)
    quiet, busy = {1: 0.060, 2: 0.040}, {1: 0.100, 2: 0.250}  # two busy loops arrive: 2 threads collapse
    drive(chooser, clock, quiet, 1 + PROBE_UNITS + 200)
    assert chooser.count == 2 and chooser.decision is not None and chooser.decision.count == 2
    ran = drive(chooser, clock, busy, 400)
    assert chooser.count == 1 and chooser.decision.count == 1 and chooser.drifted > 1.25
    assert ran.index(1) <= WINDOW + BLOCK  # the cooldown had passed: the median moved within a window
    assert ran[-50:] == [1] * 50  # settled: no probe after probe while the pace holds


def test_adapt_threads_bounds_the_probes_and_needs_the_margin() -> None:
    clock = FakeClock()
    steady = ThreadChooser([1, 2], start=1, clock=clock, adapt=True, drift=0.25)
    drive(steady, clock, {1: 0.060, 2: 0.040}, 1 + PROBE_UNITS + 50)
    ran = drive(steady, clock, {1: 0.066, 2: 0.044}, 300)  # 10% slower: inside the margin
    assert ran == [2] * 300
    # Without adapt, not even a collapse starts a new probe (the count stays what the checkpoint holds).
    fixed = ThreadChooser([1, 2], start=1, clock=clock)
    drive(fixed, clock, {1: 0.060, 2: 0.040}, 1 + PROBE_UNITS)
    assert drive(fixed, clock, {1: 0.1, 2: 0.5}, 300) == [2] * 300
    # A load that keeps changing: probes stay within their share of all units.
    flapping = ThreadChooser([1, 2], start=1, clock=clock, adapt=True, drift=0.25)
    ran = []
    for i in range(20):
        ran += drive(flapping, clock, {1: 0.05, 2: 0.03} if i % 2 else {1: 0.08, 2: 0.30}, 100)
    switches = sum(a != b for a, b in itertools.pairwise(ran))
    assert switches <= 4 * (len(ran) * PROBE_SHARE / PROBE_UNITS + 1)  # each probe switches 3 times, + choice


@pytest.mark.parametrize(
    ("cores", "ceiling", "start", "expected"),
    [(2, 2, 1, [1, 2]), (4, 4, 2, [1, 2, 3, 4]), (16, 8, 6, [2, 4, 6, 8]), (64, None, 60, [16, 32, 60, 64]),
     (1, 1, 1, [1]), (8, 8, 20, [2, 4, 8])],
)  # fmt: skip
def test_candidate_counts(cores: int, ceiling: int | None, start: int, expected: list[int]) -> None:
    assert candidate_counts(cores, ceiling, start) == expected


def test_the_tuner_sets_each_count_and_logs_the_choice_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    torch.set_num_threads(1)
    tuner = ThreadTuner(ThreadChooser([1, 2], start=1, clock=clock), unit="step")
    costs, seen = {1: 0.050, 2: 0.040}, []
    with caplog.at_level(logging.INFO, logger="deepfake.hardware"):
        for _ in range(1 + PROBE_UNITS + 2):
            seen.append(torch.get_num_threads())
            clock.t += costs[torch.get_num_threads()]
            tuner.after_step()
    assert seen == [1, *(c for c, _ in probe_schedule([1, 2])), 2, 2]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "CPU threads: timing 1, 2 intra-op thread(s) over the next steps",
        "CPU threads: 2 intra-op (fastest; median per step over 12 steps: 1 thread 50 ms, 2 threads 40 ms)",
    ]
    saved = tuner.state_dict()
    assert (saved["count"], saved["plan"]) == (2, [])


def test_paced_times_per_item_and_settles_at_the_end_of_the_pass() -> None:
    """evaluate and predict: units are images, so a short last batch is not mistaken for a fast count."""
    clock = FakeClock()
    torch.set_num_threads(2)
    tuner = ThreadTuner(ThreadChooser([1, 2], start=2, clock=clock), unit="batch", per="image")
    batches = [64] * (1 + PROBE_UNITS - 2) + [10]  # the pass ends two units before the schedule does
    per_image = {1: 0.0012, 2: 0.001}
    for n in paced(batches, tuner, units=lambda b: b):
        clock.t += n * per_image[torch.get_num_threads()]
    chooser = tuner.chooser
    assert chooser is not None and not chooser.probing and chooser.count == 2
    assert chooser.decision is not None and chooser.decision.cut_short
    assert chooser.decision.per_unit == pytest.approx(per_image)
    assert chooser.decision.describe("batch", "image") == (
        "2 intra-op (fastest; median per image over 11 batches, cut short: 1 thread 1.2 ms, 2 threads 1 ms)"
    )
    assert list(paced([1, 2], ThreadTuner(None))) == [1, 2]  # a fixed count: the items only


def test_num_threads_deterministic_and_accelerators_turn_the_probe_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("deepfake.system.hardware.available_cores", lambda: 2)
    monkeypatch.setattr("deepfake.system.hardware.TORCH_THREADS", 2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    probed = HardwareManager("cpu")
    probed.configure(loader_workers=2)
    assert probed.threads.chooser is not None and probed.threads.chooser.candidates == [1, 2]
    with caplog.at_level(logging.INFO, logger="deepfake.hardware"):
        pinned = HardwareManager("cpu", num_threads=2)
        pinned.configure(loader_workers=2)
    assert pinned.threads.chooser is None
    assert "CPU threads: 2 intra-op (hardware.num_threads=2)" in caplog.text
    # (configure() under deterministic=True would switch torch's deterministic mode process-wide.)
    assert probe_blocker("cpu", None, True, 2, 1) == "hardware.deterministic=true keeps one count"
    assert probe_blocker("cuda", None, False, 2, 1) == "the cuda device does the model's compute"
    assert probe_blocker("cpu", None, False, 2, 2) == "2 torchrun processes keep one count each"
    assert probe_blocker("cpu", None, False, 2, 1) is None
    torch.set_num_threads(2)
    for _ in range(1 + PROBE_UNITS):
        pinned.threads.after_step()
    assert torch.get_num_threads() == 2
    assert pinned.threads.state_dict() == {
        "count": 2, "candidates": [2], "pending": False, "plan": [], "units": 0, "dropped": [], "samples": {},
    }  # fmt: skip
    # A resume with the count pinned keeps the pin, and says when that breaks bit-exactness.
    with caplog.at_level(logging.WARNING, logger="deepfake.hardware"):
        pinned.threads.load_state_dict({**pinned.threads.state_dict(), "count": 1}, pinned=2)
    assert "hardware.num_threads=2, but the checkpoint's run used 1 intra-op threads" in caplog.text
    assert torch.get_num_threads() == 2


def test_an_older_checkpoint_keeps_the_formula_count(caplog: pytest.LogCaptureFixture) -> None:
    tuner = ThreadTuner(ThreadChooser([1, 2], start=1, clock=FakeClock()))
    with caplog.at_level(logging.INFO, logger="deepfake.hardware"):
        tuner.load_state_dict(None)
    assert tuner.chooser is not None and not tuner.chooser.pending
    assert "no thread count (an older run): keeping 1, no probe" in caplog.text


class PacedModel(torch.nn.Module):
    """A scorer whose batches take `per_image[count]` per image on the fake clock."""

    def __init__(self, clock: FakeClock, per_image: dict[int, float]) -> None:
        super().__init__()
        self.clock, self.per_image = clock, per_image

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.clock.t += len(images) * self.per_image[torch.get_num_threads()]
        return images.float().mean((1, 2, 3))


def test_evaluate_and_predict_time_their_batches_through_the_ensemble() -> None:
    """`score_loader` (evaluate, the end-of-training scores) paces its batches through `Ensemble.threads`."""
    from deepfake.evaluation.ensemble import Ensemble, Member, score_loader

    clock, per_image = FakeClock(), {1: 0.004, 2: 0.001}
    ensemble = Ensemble([Member(PacedModel(clock, per_image), img_size=8)])
    torch.set_num_threads(1)
    ensemble.threads = ThreadTuner(ThreadChooser([1, 2], start=1, clock=clock), unit="batch", per="image")
    batches = [
        (torch.zeros(n, 3, 8, 8, dtype=torch.uint8), torch.zeros(n), torch.arange(n)) for n in [32] * 20
    ]
    labels, logits, _ = score_loader(ensemble, batches, torch.device("cpu"))
    assert logits.shape == (1, 640) and len(labels) == 640
    chooser = ensemble.threads.chooser
    assert chooser is not None and chooser.count == 2 and torch.get_num_threads() == 2
    assert chooser.decision is not None and chooser.decision.per_unit == pytest.approx(per_image)


def test_extraction_times_mtcnn_on_the_cpu_unless_detector_threads_pins_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from deepfake.extraction.face_finder import MtcnnFinder, detector_threads

    monkeypatch.setattr("deepfake.extraction.face_finder.available_cores", lambda: 2)
    mtcnn = MtcnnFinder.__new__(MtcnnFinder)  # the thread choice reads only its device
    mtcnn.device = torch.device("cpu")
    timed = detector_threads(mtcnn, None, workers=1)
    assert timed.chooser is not None and timed.chooser.candidates == [1, 2] and torch.get_num_threads() == 1
    assert detector_threads(mtcnn, 2, workers=1).chooser is None and torch.get_num_threads() == 2
    mtcnn.device = torch.device("cuda")
    assert detector_threads(mtcnn, None, workers=1).chooser is None
