"""The intra-op thread count chosen by measurement: a few real units of work (training steps, scored batches,
extracted videos) at each candidate count, and the fastest kept.

No formula knows whether the cores are free: two threads beside two 64 px loader workers win on a quiet
2-core machine, and collapse to a fifth of one thread's speed when two other processes keep the cores busy
(an OpenMP team moves at its slowest thread's pace). So the first units of work are timed, in blocks of
`BLOCK` consecutive units per candidate (the first of each block settles the switch and is not timed), over
`ROUNDS` rounds in alternating order, so that every candidate sees the same moments of a shared machine. A
count whose block came out `DROP` times slower than another's is timed no more, nor one whose single step
took `COLLAPSE` times another's median, so a collapsing count costs a step. The units count: training steps update the model as usual, only their thread count varies.

Exactness. The probe's remaining units (their counts) and its timings travel in the checkpoint, so a resumed
run continues the probe where it stopped and runs each step at the count the run it continues used, up to
the probe's next decision (dropping a count, choosing one), which reads the clock again; after the probe the
chosen count is saved and restored. A resume after the probe is therefore bit-identical, and one from a
checkpoint taken during it is when it decides alike (a count clearly faster than the others always is). With
`adapt` a drift of the step time starts a new probe: faster on a machine whose load changes, but a resumed
run no longer repeats the counts of the run it continues.

`ThreadChooser` is the pure decision (a clock is passed in); `ThreadTuner` applies its counts to torch and logs.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

log = logging.getLogger("deepfake.hardware")

BLOCK = 3  # consecutive units per candidate and round; the first settles the switch and is not timed
ROUNDS = 2  # rounds over the candidates, ascending then descending
# A count within TOLERANCE of the fastest is as fast: the fewest such threads win (they leave cores to others).
TOLERANCE = 0.05
DROP = 1.4  # a count this much slower than another once its block is timed is timed no more in this probe
COLLAPSE = 3.0  # ...and one whose any single unit is this much slower, at once (a busy machine's thread team)
WINDOW = 8  # adapt: units in the running median of the step time
PROBE_SHARE = 0.1  # adapt: at most this share of all units are spent in probes
T = TypeVar("T")


def plural(word: str) -> str:
    return word + ("es" if word.endswith(("ch", "sh", "s", "x")) else "s")


def candidate_counts(cores: int, ceiling: int | None = None, start: int | None = None) -> list[int]:
    """The counts worth timing: every one up to 4, beyond that the top, its half and quarter, and `start`
    (the formula's count). The top is the cores, capped at torch's own choice (`ceiling`: physical cores or
    OMP_NUM_THREADS)."""
    top = max(1, min(cores, ceiling) if ceiling else cores)
    counts = set(range(1, top + 1)) if top <= 4 else {top, max(1, top // 2), max(1, top // 4)}
    if start is not None and 1 <= start <= top:
        counts.add(start)
    return sorted(counts)


def probe_schedule(candidates: Sequence[int], first: int | None = None) -> list[tuple[int, bool]]:
    """(count, timed) for each unit of one probe: blocks of `BLOCK` units, rounds in alternating order. The
    first round starts with `first` (the count already running: the yardstick the others are dropped against),
    then the others in ascending order."""
    order = sorted(candidates, key=lambda c: (c != first, c))
    plan = []
    for r in range(ROUNDS):
        for count in order if r % 2 == 0 else order[::-1]:
            plan += [(count, i > 0) for i in range(BLOCK)]
    return plan


@dataclass(frozen=True)
class Decision:
    """A probe's outcome: the count kept and the median seconds per unit of each count timed."""

    count: int
    per_unit: dict[int, float]
    units: int  # units of work the probe spanned
    cut_short: bool = False  # ended before its schedule (an epoch or a pass ended)

    def describe(self, unit: str, per: str | None = None) -> str:
        """One line: the count, why, and each count's median time per `per` (an image, a frame) over the
        probe's `unit`s (steps, batches, videos)."""
        if not self.per_unit:
            return f"{self.count} intra-op (nothing timed: the probe ended after {self.units} {unit}(s))"
        times = ", ".join(
            f"{c} thread{'s' if c > 1 else ''} {t * 1e3:.3g} ms" for c, t in sorted(self.per_unit.items())
        )
        fastest = self.per_unit[self.count] == min(self.per_unit.values())
        how = "fastest" if fastest else "as fast, fewer threads"
        short = ", cut short" if self.cut_short else ""
        over = f"{self.units} {plural(unit)}"
        return f"{self.count} intra-op ({how}; median per {per or unit} over {over}{short}: {times})"


class ThreadChooser:
    """Which count the next unit of work runs at. Call `step()` after each unit; it returns the count for the
    next. The first unit runs at `start`, untimed (lazy initialisation, loader start-up); the probe follows.

    `adapt`: after a probe, the median time of the last `WINDOW` units is compared with the one measured just
    after the probe; a change of more than `drift` (as a share) starts a new probe, at most so often that
    probes take `PROBE_SHARE` of all units.
    """

    def __init__(
        self,
        candidates: Sequence[int],
        start: int,
        clock: Callable[[], float] = time.perf_counter,
        *,
        probe: bool = True,
        adapt: bool = False,
        drift: float = 0.25,
    ) -> None:
        self.candidates = sorted(set(candidates))
        self.count = self.start = start
        self.clock = clock
        self.adapt, self.drift = adapt, drift
        self.pending = probe and len(self.candidates) > 1  # a probe starts after the first unit
        self.plan: list[tuple[int, bool]] = []  # a running probe's units, the current one first; [] = none
        self.samples: dict[int, list[float]] = {}
        self.dropped: set[int] = set()  # counts the running probe found clearly slower
        self.units = 0  # units the running probe has spent
        self.last: float | None = None  # when the previous unit ended; None after a pause
        # adapt: the median time per unit at the chosen count, measured once the probe is over
        self.reference: float | None = None
        self.recent: deque[float] = deque(maxlen=WINDOW)
        self.since = 0  # units since the last probe ended
        self.decision: Decision | None = None  # the latest probe's, for the log
        self.drifted: float | None = None  # adapt: the ratio that started the running probe

    @property
    def probing(self) -> bool:
        return bool(self.plan)

    def step(self, units: float = 1.0) -> int:
        """A unit of work (`units` items of it: images, frames) just ended; the count for the next one."""
        now = self.clock()
        per_unit = None if self.last is None else (now - self.last) / max(units, 1e-9)
        self.last = now
        if self.plan:
            count, timed = self.plan.pop(0)
            self.units += 1
            if timed and per_unit is not None:
                self.samples[count].append(per_unit)
            self._drop_slow(count, per_unit)
            if self.plan and len(set(self.candidates) - self.dropped) > 1:
                self.count = self.plan[0][0]
            else:  # the schedule is done, or every count but one was dropped: nothing left to compare
                self._choose(cut_short=False)
        elif self.pending:
            self._start_probe()
        elif self.adapt and per_unit is not None:
            self._watch(per_unit)
        return self.count

    def pause(self) -> None:
        """The time until the next unit ends is not work (validation, a new epoch's loader start-up)."""
        self.last = None
        self.recent.clear()

    def settle(self) -> int:
        """End a running probe now, choosing from the units timed so far (an epoch or a pass ended)."""
        if self.plan:
            self._choose(cut_short=True)
        return self.count

    def _start_probe(self, drifted: float | None = None) -> None:
        self.pending, self.drifted = False, drifted
        self.samples = {c: [] for c in self.candidates}
        self.plan, self.units, self.dropped = probe_schedule(self.candidates, self.count), 0, set()
        self.count = self.plan[0][0]

    def _medians(self) -> dict[int, float]:
        return {c: statistics.median(s) for c, s in self.samples.items() if s}

    def _drop_slow(self, count: int, per_unit: float | None) -> None:
        """Take a count out of the rest of the probe once it is clearly slower than another: any of its units
        (the untimed first included) `COLLAPSE` x another count's median, or its block's median `DROP` x. On a
        loaded machine a collapsing count then costs one step."""
        medians = self._medians()
        others = [t for c, t in medians.items() if c != count]
        if per_unit is not None and others and per_unit > COLLAPSE * min(others):
            self.dropped.add(count)
        block_done = not (self.plan and self.plan[0][1])  # the next unit settles another count, or none left
        if block_done and len(medians) > 1:
            fastest = min(medians.values())
            self.dropped |= {c for c, t in medians.items() if t > DROP * fastest}
        self.plan = [(c, timed) for c, timed in self.plan if c not in self.dropped]

    def _choose(self, cut_short: bool) -> None:
        timed = self._medians()
        if timed:
            fastest = min(timed.values())
            self.count = min(c for c, t in timed.items() if t <= fastest * (1 + TOLERANCE))
        else:  # nothing timed (a pass of one or two units): back to the count the run started with
            self.count = self.start
        self.decision = Decision(self.count, timed, self.units, cut_short)
        self.plan, self.reference, self.since = [], None, 0
        self.recent.clear()

    def _watch(self, per_unit: float) -> None:
        self.since += 1
        self.recent.append(per_unit)
        if len(self.recent) < WINDOW:
            return
        now = statistics.median(self.recent)
        if self.reference is None:
            self.reference = now  # the chosen count's steady pace, measured once the probe is over
            return
        cooldown = len(self.candidates) * ROUNDS * BLOCK * (1 / PROBE_SHARE - 1)
        ratio = now / self.reference
        if self.since >= cooldown and abs(ratio - 1) > self.drift:
            self._start_probe(drifted=ratio)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps: the count, and a running probe's remaining units and timings."""
        return {
            "count": self.count,
            "start": self.start,
            "candidates": list(self.candidates),
            "pending": self.pending,
            "plan": [[c, timed] for c, timed in self.plan],
            "units": self.units,
            "dropped": sorted(self.dropped),
            "samples": {c: list(s) for c, s in self.samples.items()},
        }

    def load_state_dict(self, saved: Mapping[str, Any]) -> None:
        """Continue a saved run: its count, and its probe where it stopped (the same counts for the same units)."""
        self.count = int(saved["count"])
        self.start = int(saved.get("start", self.count))
        self.candidates = [int(c) for c in saved["candidates"]]
        self.pending = bool(saved["pending"])
        self.plan = [(int(c), bool(timed)) for c, timed in saved.get("plan", [])]
        self.units = int(saved.get("units", 0))
        self.dropped = {int(c) for c in saved.get("dropped", [])}
        self.samples = {int(c): [float(t) for t in s] for c, s in saved["samples"].items()}
        self.last, self.reference, self.since = None, None, 0
        self.recent.clear()


class ThreadTuner:
    """Applies a `ThreadChooser`'s counts with `torch.set_num_threads` and logs each probe's outcome in one
    line; with no chooser (a pinned or formula count) every call is a no-op.

    `torch.set_num_threads` sets the calling thread's OpenMP count: call it from the thread that does the work.
    """

    def __init__(self, chooser: ThreadChooser | None, unit: str = "step", per: str | None = None) -> None:
        self.chooser = chooser
        self.unit, self.per = unit, per or unit  # what is timed (a step, a batch), and per what (an image)

    @property
    def count(self) -> int:
        return self.chooser.count if self.chooser else torch.get_num_threads()

    def after_step(self, units: float = 1.0) -> None:
        if self.chooser is not None:
            self._apply(self.chooser.step, units)

    def end_pass(self) -> None:
        """An epoch's (or a pass's) last unit ended: settle a running probe, and time nothing until the next."""
        if self.chooser is not None:
            self._apply(lambda: self.chooser.settle())
            self.chooser.pause()

    def _apply(self, step: Callable[..., int], *args: Any) -> None:
        chooser = self.chooser
        assert chooser is not None
        decided, probing = chooser.decision, chooser.probing
        count = step(*args)
        if chooser.probing and not probing:
            if chooser.drifted is None:
                names = ", ".join(map(str, chooser.candidates))
                log.info(
                    "CPU threads: timing %s intra-op thread(s) over the next %s", names, plural(self.unit)
                )
            else:
                log.info("CPU threads: the time per %s moved to %.2fx its pace after the last probe; timing "
                         "the counts again", self.per, chooser.drifted)  # fmt: skip
        if chooser.decision is not decided and chooser.decision is not None:
            log.info("CPU threads: %s", chooser.decision.describe(self.unit, self.per))
        if count != torch.get_num_threads():
            torch.set_num_threads(count)

    def state_dict(self) -> dict[str, Any]:
        """The chooser's state; a fixed count is saved too, so a resume elsewhere uses the same one."""
        if self.chooser is not None:
            return self.chooser.state_dict()
        count = torch.get_num_threads()
        return {
            "count": count,
            "candidates": [count],
            "pending": False,
            "plan": [],
            "units": 0,
            "dropped": [],
            "samples": {},
        }

    def load_state_dict(self, saved: Mapping[str, Any] | None, pinned: int | None = None) -> None:
        """Continue with a checkpoint's count (and probe); `pinned` (hardware.num_threads) wins if given.

        A checkpoint without thread state (older runs) ran at the formula's count, which this process already
        uses: it continues there without probing."""
        if saved is None:
            if self.chooser is not None:
                log.info("CPU threads: the checkpoint has no thread count (an older run): keeping %d, no probe",
                         self.chooser.count)  # fmt: skip
                self.chooser.pending = False
            return
        if pinned:
            if pinned != saved["count"]:
                log.warning("hardware.num_threads=%d, but the checkpoint's run used %d intra-op threads: the "
                            "resumed run will not be bit-identical", pinned, saved["count"])  # fmt: skip
            return
        if self.chooser is None:
            self.chooser = ThreadChooser(saved["candidates"], int(saved["count"]), probe=False)
        self.chooser.load_state_dict(saved)
        log.info("CPU threads: %d intra-op, as the checkpoint's run used%s", self.chooser.count,
                 " (its probe continues)" if self.chooser.probing else "")  # fmt: skip
        torch.set_num_threads(self.chooser.count)


def paced(
    items: Iterable[T], tuner: ThreadTuner | None, units: Callable[[T], float] | None = None
) -> Iterator[T]:
    """`items`, with `tuner.after_step` called once the consumer is done with each (the time between two
    calls is the loader's wait plus the work); `units` counts an item's size (images in a batch)."""
    if tuner is None or tuner.chooser is None:
        yield from items
        return
    tuner.chooser.pause()
    for item in items:
        yield item
        tuner.after_step(units(item) if units else 1.0)
    tuner.end_pass()
