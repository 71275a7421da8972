"""Method selection: which manipulation methods (or generators) a run trains on and is tested on.

`data.train_methods` limits the fakes of the train and val splits to the named methods (`train_methods_mode=only`)
or to every method but them (`all_but`: leave-one-out); `data.test_methods` limits the test sets' fakes. Reals
stay: a real image whose method has no fakes (FF++'s `youtube` originals, a folder's `real/`) is a shared real
and is always kept. A method with reals of its own (a GenImage or ForenSynths generator: its folder holds the real
images its fakes are paired with) is taken or left whole, its reals with its fakes, so training on one generator
does not also train on the other generators' reals.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from deepfake.choices import METHOD_MODES
from deepfake.data.samples import Sample
from deepfake.errors import ConfigError, DataError


def fake_methods(rows: Iterable[Sample]) -> list[str]:
    """The methods that have fake images, sorted."""
    return sorted({r.method for r in rows if r.label})


def chosen_methods(available: Sequence[str], names: Sequence[str], mode: str, key: str) -> set[str]:
    """The fake methods kept: `names` (only) or the others (all_but); a name no fake has is refused by name."""
    if mode not in METHOD_MODES:
        raise ConfigError(f"data.{key}_mode={mode!r} is not one of {', '.join(METHOD_MODES)}")
    unknown = [n for n in names if n not in available]
    if unknown:
        raise DataError(
            f"data.{key}={list(names)} names {', '.join(unknown)}, which no fake image has; the methods with fakes "
            f"are: {', '.join(available) or 'none'}"
        )
    chosen = set(names) if mode == "only" else set(available) - set(names)
    if not chosen:
        raise ConfigError(
            f"data.{key}_mode=all_but with data.{key}={list(names)} leaves no fake method to train on; "
            f"leave out fewer of: {', '.join(available)}"
        )
    return chosen


def keep_methods(rows: Sequence[Sample], chosen: set[str], with_fakes: Iterable[str]) -> list[Sample]:
    """Rows of the chosen methods, plus the shared reals (reals of a method that has no fakes)."""
    has_fakes = set(with_fakes)
    return [r for r in rows if r.method in chosen or r.method not in has_fakes]


def select_splits(
    splits: Mapping[str, Sequence[Sample]], names: Sequence[str], mode: str, key: str
) -> dict[str, list[Sample]]:
    """Every split of `splits` limited to the selection; names are checked against the fakes of all of them."""
    if not names:
        return {split: list(rows) for split, rows in splits.items()}
    available = fake_methods(r for rows in splits.values() for r in rows)
    chosen = chosen_methods(available, names, mode, key)
    return {split: keep_methods(rows, chosen, available) for split, rows in splits.items()}


def counts(rows: Sequence[Sample]) -> str:
    """`N images (r real, f fake)`: the data log's count of a split."""
    n_fake = sum(r.label for r in rows)
    return f"{len(rows)} images ({len(rows) - n_fake} real, {n_fake} fake)"


def by_method(rows: Sequence[Sample]) -> str:
    """`fakes: A n, B n; reals: real n`."""
    parts = []
    for name, label in (("fakes", 1), ("reals", 0)):
        found = Counter(r.method for r in rows if r.label == label)
        if found:
            parts.append(f"{name}: " + ", ".join(f"{m} {n}" for m, n in sorted(found.items())))
    return "; ".join(parts) or "no images"


def describe(rows: Sequence[Sample]) -> str:
    """`N images (r real, f fake, x% fake); fakes: A n, B n; reals: real n`, for the start check."""
    n_fake = sum(r.label for r in rows)
    share = f", {n_fake / len(rows):.0%} fake" if rows else ""
    return f"{len(rows)} images ({len(rows) - n_fake} real, {n_fake} fake{share}); {by_method(rows)}"
