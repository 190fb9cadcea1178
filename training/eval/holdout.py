"""A held-out split of LFW ``peopleDevTrain``: training-side validation for choices.

Choices (recipes, levers, thresholds) are made on training-side data, never on
``pairsDevTest`` / View 2 (docs/evaluation.md). A model trained on all of
``peopleDevTrain`` has seen every DevTrain person, so its DevTrain pairs measure memory,
not recognition. This split sets some DevTrain people aside: a model trained on the rest
is measured on pairs and an identification set of people it never saw, in the formats
the LFW protocols already read:

- ``people.txt``: a two-fold people list (fold 0: training people, fold 1: held out), for
  ``data.people_file`` with ``data.people_folds: [0]``;
- ``people-heldout.txt``: the held-out people alone, for ``lrfr eval lfw
  --identification --people-file``;
- ``pairs-heldout.txt``: matched and mismatched pairs of held-out people in the View 1
  layout, for ``lrfr eval lfw --pairs-file``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from training.eval.datasets import parse_people_file

Person = tuple[str, int]


@dataclass(frozen=True)
class HoldoutSplit:
    """DevTrain people split into ``training`` and ``heldout`` (name, image count)."""

    training: list[Person]
    heldout: list[Person]

    def pairs(self, count: int, *, seed: int = 0) -> tuple[list[tuple[str, int, int]],
                                                          list[tuple[str, int, str, int]]]:
        """``count`` matched pairs (two images of one held-out person) and ``count``
        mismatched ones (two held-out people), distinct, drawn with ``seed``.

        Raises:
            ValueError: the held-out people cannot give ``count`` distinct pairs of a kind.
        """
        rng = random.Random(seed)
        several = [(name, n) for name, n in self.heldout if n >= 2]
        possible = sum(n * (n - 1) // 2 for _, n in several)
        images = sum(n for _, n in self.heldout)
        across = (images**2 - sum(n * n for _, n in self.heldout)) // 2
        if count > possible or count > across:  # the draws below could never finish
            raise ValueError(f"the held-out people give {possible} matched and {across} "
                             f"mismatched pairs, {count} of each asked for")
        matched: set[tuple[str, int, int]] = set()
        while len(matched) < count:
            name, n = rng.choice(several)
            i, j = sorted(rng.sample(range(1, n + 1), 2))
            matched.add((name, i, j))
        mismatched: set[tuple[str, int, str, int]] = set()
        while len(mismatched) < count:
            (a, n_a), (b, n_b) = sorted(rng.sample(self.heldout, 2))
            mismatched.add((a, rng.randint(1, n_a), b, rng.randint(1, n_b)))
        return sorted(matched), sorted(mismatched)


def split_people(people_file: str | Path, *, fraction: float, seed: int = 0) -> HoldoutSplit:
    """Sets ``fraction`` of the people of a one-fold list aside, drawn with ``seed``;
    people with one image and people with several are drawn separately, so both parts
    keep the list's mix."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    people = [entry for fold in parse_people_file(people_file) for entry in fold]
    rng = random.Random(seed)
    heldout: set[str] = set()
    for group in ([p for p in people if p[1] == 1], [p for p in people if p[1] >= 2]):
        heldout.update(name for name, _ in rng.sample(group, round(fraction * len(group))))
    return HoldoutSplit(
        training=[p for p in people if p[0] not in heldout],
        heldout=[p for p in people if p[0] in heldout],
    )


def write_split(split: HoldoutSplit, folder: str | Path, *, pairs: int, seed: int = 0) -> None:
    """Writes ``people.txt``, ``people-heldout.txt`` and ``pairs-heldout.txt``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def fold(people: list[Person]) -> list[str]:
        return [str(len(people))] + [f"{name}\t{n}" for name, n in people]

    (folder / "people.txt").write_text(
        "\n".join(["2", *fold(split.training), *fold(split.heldout)]) + "\n", encoding="utf-8"
    )
    (folder / "people-heldout.txt").write_text(
        "\n".join(fold(split.heldout)) + "\n", encoding="utf-8"
    )
    matched, mismatched = split.pairs(pairs, seed=seed)
    lines = [str(pairs)]
    lines += [f"{name}\t{i}\t{j}" for name, i, j in matched]
    lines += [f"{a}\t{i}\t{b}\t{j}" for a, i, b, j in mismatched]
    (folder / "pairs-heldout.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    """``python -m training.eval.holdout --lfw LFW --out runs/holdout``: writes the split."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--lfw", type=Path, required=True, help="LFW folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for the three files")
    parser.add_argument("--fraction", type=float, default=0.2, help="share of people held out")
    parser.add_argument("--pairs", type=int, default=1000, help="pairs of each kind")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    split = split_people(args.lfw / "peopleDevTrain.txt", fraction=args.fraction, seed=args.seed)
    write_split(split, args.out, pairs=args.pairs, seed=args.seed)
    several = sum(n >= 2 for _, n in split.heldout)
    print(f"{len(split.training)} training people, {len(split.heldout)} held out "
          f"({several} with two or more images); {args.pairs} + {args.pairs} pairs -> {args.out}")


if __name__ == "__main__":
    main()
