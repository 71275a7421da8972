"""Which inputs a run scores: each distinct input once, this shard's slice, less those that already have a row.

An input named twice (a list with repeats, a manifest listing a frame twice) is scored once; the repeats are
counted and the first few named. Shards are dealt round-robin over the distinct inputs in source order, so the
slices are deterministic, disjoint, cover every input and spread slow inputs alike. Memory: one set of the
inputs' normalised paths (about 150 bytes an input), never the rows.
"""

from __future__ import annotations

import os
from collections.abc import Container, Iterator
from dataclasses import dataclass, field

from deepfake.errors import UserError
from deepfake.prediction.sources import Entry, InputSource

EXAMPLES = 5  # repeated inputs named in the log


@dataclass
class Plan:
    """The counts of a run, from one pass over the source."""

    inputs: int = 0  # distinct inputs of the source
    duplicates: int = 0  # entries naming an input named before (scored once)
    examples: list[str] = field(default_factory=list)  # the first repeated ones, with where they repeat
    mine: int = 0  # distinct inputs in this shard's slice
    done: int = 0  # of those, inputs that already have a complete row

    @property
    def todo(self) -> int:
        return self.mine - self.done


class Selection:
    """A source's distinct entries, this shard's slice of them, and the ones still to score."""

    def __init__(self, source: InputSource, index: int = 0, count: int = 1) -> None:
        self.source, self.index, self.count = source, index, count

    def distinct(self, plan: Plan | None = None) -> Iterator[Entry]:
        """Each input once, in source order (the first time it is named); repeats go into `plan`."""
        seen: dict[str, int] = {}  # normalised path -> the line that first named it
        for entry in self.source.entries():
            key = os.path.normpath(os.path.abspath(entry.path))
            first = seen.get(key)
            if first is None:
                seen[key] = entry.line
                yield entry
            elif plan is not None:
                plan.duplicates += 1
                if len(plan.examples) < EXAMPLES:
                    where = f" (lines {first} and {entry.line})" if entry.line else ""
                    plan.examples.append(f"{entry.path}{where}")

    def mine(self, plan: Plan | None = None) -> Iterator[Entry]:
        """This shard's slice: every `count`-th distinct input, from the `index`-th."""
        for i, entry in enumerate(self.distinct(plan)):
            if plan is not None:
                plan.inputs += 1
            if i % self.count == self.index:
                yield entry

    def plan(self, done: Container[str]) -> Plan:
        """Count everything in one pass (nothing is kept); an input source with no input at all is an error."""
        plan = Plan()
        for entry in self.mine(plan):
            plan.mine += 1
            plan.done += entry.path in done
        if plan.inputs == 0:
            raise UserError(f"input {self.source.describe()} {self.source.empty_message}")
        return plan

    def todo(self, done: Container[str]) -> Iterator[Entry]:
        """This shard's inputs without a row yet, in source order."""
        return (entry for entry in self.mine() if entry.path not in done)
