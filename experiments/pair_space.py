"""Issue 17: where a gated model should compare two faces.

Today a gated model gives every face one embedding: dlib's descriptor when its Laplacian
q is at or above the gate, the student's z below it, and any two faces are compared by
the cosine of those. A sharp face against a blurred one is thus compared across the two
networks (dlib's descriptor against the student's z). This script measures, on one set of
LFW pairs and people, three ways to compare:

* ``gated``: as served today, one embedding per face;
* ``student``: the student's z for every face (no gate);
* ``pair space``: dlib's descriptors when both faces are at or above the gate, the
  student's z of both faces otherwise. For pairs, each space gets its own threshold,
  chosen on the training folds (as the service calibrates per quality cell). For
  identification the probe picks the space (a probe below the gate is searched
  among the gallery's student z, a sharp probe as today), so that one search ranks scores
  of one space;
* ``fused w`` (``--weights``): ``(1 - w) x gated + w x student`` cosine for every pair,
  i.e. the cosine of the unit vectors ``[sqrt(1 - w) g ; sqrt(w) z]``: one embedding per
  face that a single index can search. Below the gate g is z, so two blurred faces keep
  the student's cosine; a sharp face against a blurred one blends today's cross-network
  cosine with the students'; two sharp faces blend dlib's with the student's;
* ``flip sharp`` (``--flip-sharp``): as served, but each face at or above the gate
  embedded as the normalised sum of dlib's descriptors of it and of its mirror image
  (flip test-time averaging on the sharp branch only; blurred faces unchanged), alone
  and with the pair space.

Pairs: 10-fold accuracy, both faces degraded to r and 112 px against r. Identification:
closed-set rank-1 / rank-5 over every gallery person (one photo each), probes degraded to
r, the gallery at r (both) or at 112 px (cross). Verification against the gallery: every
probe against every gallery photo (its own person's: genuine; the others: impostors, a
few hundred thousand), TAR at FAR 1e-2 and 1e-3 with one threshold per rule, the
decision-level view that a tuned accuracy hides. Open set: ``lrfr eval``'s FNIR at FPIR
1e-2 / 1e-3 (half the people enrolled), the pair space searched with the service's
stored and query vectors. The ``gated`` and ``student`` columns
repeat ``lrfr eval lfw`` on the same data (a check of this script).

    git show b765ca8:models/bundled/lrfr.onnx > runs/models-2.1.0/lrfr.onnx   # and .json
    python experiments/pair_space.py --gated runs/models-2.1.0/lrfr.onnx \\
        --data ../shared/data/lfw --view 1 --out results/pair-space/devtest.md
    # held-out people (choices): --gated GATED.pt --student STUDENT.pt
    #     --pairs-file $PWD/runs/holdout/pairs-heldout.txt
    #     --people-file $PWD/runs/holdout/people-heldout.txt
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.artifact import load_metadata
from models.backbones.gated import QualityGated
from models.comparison import queries, stored_vectors
from training.eval.datasets import load_lfw, load_lfw_identification
from training.eval.embedding import (
    EmbeddingModel,
    TorchModuleModel,
    artifact_metadata,
    load_model,
)
from training.eval.metrics import (
    SearchResults,
    identification_metrics,
    kfold_accuracy,
    kfold_accuracy_by_group,
    search,
    threshold_at_far,
)
from training.eval.protocols import OpenSetProtocol, PairProtocol, score_open_set
from training.eval.runner import EmbeddingStore, EvalSettings, join_images, load_faces
from training.faces import FaceLoader


def fused(gated: np.ndarray, student: np.ndarray, weight: float) -> np.ndarray:
    """Unit vectors whose cosine is ``(1 - weight) x gated + weight x student``."""
    return np.concatenate([np.sqrt(1 - weight) * gated, np.sqrt(weight) * student], axis=1)


def gate_of(model: EmbeddingModel) -> float:
    """The gate q of a loaded gated model: an artifact's metadata, or the threshold of a
    gated checkpoint's ``QualityGated`` module."""
    metadata = artifact_metadata(model)
    if metadata is not None and metadata.gate is not None:
        return float(metadata.gate.threshold)
    module = getattr(model, "module", None)
    if isinstance(module, QualityGated):
        return module.gate
    raise SystemExit(f"{model.describe().get('path')} is not a gated model")


@dataclass
class Spaces:
    """The same faces embedded by the gated model and by its student, and their q."""

    gated: EmbeddingStore
    student: EmbeddingStore
    gate: float
    flipped: EmbeddingStore | None = None

    def get(self, side: int | None, indices: np.ndarray) -> tuple[np.ndarray, ...]:
        """(gated embeddings, student z, sharp) of the faces at ``indices``."""
        gated = self.gated.get(side, indices)  # measures q of the pixels it embeds
        sharp = self.gated.quality(side, indices) >= self.gate
        return gated, self.student.get(side, indices), sharp

    def flip_sharp(self, side: int | None, indices: np.ndarray) -> np.ndarray:
        """The gated embeddings with flip averaging on the sharp faces only (dlib's branch:
        a face and its mirror image have the same q, so the same branch)."""
        assert self.flipped is not None
        gated, _, sharp = self.get(side, indices)
        return np.where(sharp[:, None], self.flipped.get(side, indices), gated)


def pair_rows(
    spaces: Spaces, protocol: PairProtocol, side: int, cross: bool, weights: list[float]
) -> dict[str, Any]:
    """Accuracy of every rule on the pairs, both at ``side`` or 112 px against it."""
    labels = protocol.labels.astype(bool)
    gl, sl, hl = spaces.get(None if cross else side, protocol.left)
    gr, sr, hr = spaces.get(side, protocol.right)
    gated = np.einsum("ij,ij->i", gl, gr).astype(np.float64)
    student = np.einsum("ij,ij->i", sl, sr).astype(np.float64)
    in_dlib = hl & hr
    row: dict[str, Any] = {"dlib space share": float(in_dlib.mean())}
    for name, scores in (("gated", gated), ("student", student)):
        folded = kfold_accuracy(scores, labels, protocol.folds)
        row[name] = (folded.mean, folded.std)
    folded = kfold_accuracy_by_group(
        np.where(in_dlib, gated, student), labels, protocol.folds, in_dlib
    )
    row["pair space"] = (folded.mean, folded.std)
    for w in weights:
        folded = kfold_accuracy((1 - w) * gated + w * student, labels, protocol.folds)
        row[f"fused {w:g}"] = (folded.mean, folded.std)
    if spaces.flipped is not None:
        flipped = np.einsum(
            "ij,ij->i", spaces.flip_sharp(None if cross else side, protocol.left),
            spaces.flip_sharp(side, protocol.right),
        ).astype(np.float64)
        folded = kfold_accuracy(flipped, labels, protocol.folds)
        row["flip sharp"] = (folded.mean, folded.std)
        folded = kfold_accuracy_by_group(
            np.where(in_dlib, flipped, student), labels, protocol.folds, in_dlib
        )
        row["pair space + flip sharp"] = (folded.mean, folded.std)
    return row


def per_probe(sharp: np.ndarray, if_sharp: SearchResults, if_not: SearchResults) -> SearchResults:
    """Each probe's search from ``if_sharp`` where it is sharp, else from ``if_not``."""
    return SearchResults(**{
        field.name: np.where(sharp, getattr(if_sharp, field.name), getattr(if_not, field.name))
        for field in fields(SearchResults)
    })


def rank_rows(
    spaces: Spaces, ident: OpenSetProtocol, side: int, cross: bool, weights: list[float]
) -> dict[str, Any]:
    """Closed-set rank-1 / rank-5 of every rule; the pair's space searched as the service
    does, the gallery's stored vectors against each probe's query vector (a sharp probe:
    dlib's cosine with sharp photos, the students' with blurred ones)."""
    gg, sg, hg = spaces.get(None if cross else side, ident.gallery)
    gp, sp, hp = spaces.get(side, ident.probes)
    row: dict[str, Any] = {"sharp probe share": float(hp.mean())}
    results = {
        name: search(p, ident.probe_labels, g, ident.gallery_labels)
        for name, (p, g) in (("gated", (gp, gg)), ("student", (sp, sg)))
    }
    results["pair space"] = search(
        queries(stored_vectors(gp, sp, hp), "pair-space"), ident.probe_labels,
        stored_vectors(gg, sg, hg), ident.gallery_labels,
    )
    for w in weights:
        results[f"fused {w:g}"] = search(
            fused(gp, sp, w), ident.probe_labels, fused(gg, sg, w), ident.gallery_labels
        )
    if spaces.flipped is not None:
        results["flip sharp"] = search(
            spaces.flip_sharp(side, ident.probes), ident.probe_labels,
            spaces.flip_sharp(None if cross else side, ident.gallery), ident.gallery_labels,
        )
        results["pair space + flip sharp"] = per_probe(
            hp, results["flip sharp"], results["student"]
        )
    for name in results:
        summary: dict[str, Any] = identification_metrics(results[name], (1, 5), ())
        row[name] = (float(summary["rank1"]), float(summary["rank5"]))
    return row


#: FARs of the verification-against-the-gallery table.
GALLERY_FARS = (1e-2, 1e-3)


def tar_rows(spaces: Spaces, ident: OpenSetProtocol, side: int, cross: bool) -> dict[str, Any]:
    """TAR at :data:`GALLERY_FARS` of every probe against every gallery photo, per rule
    (the pair space: dlib's cosine when probe and photo are both sharp, else the students')."""
    gg, sg, hg = spaces.get(None if cross else side, ident.gallery)
    gp, sp, hp = spaces.get(side, ident.probes)
    genuine = np.asarray(ident.probe_labels)[:, None] == np.asarray(ident.gallery_labels)[None, :]
    gated, student = gp @ gg.T, sp @ sg.T
    both_sharp = hp[:, None] & hg[None, :]
    row: dict[str, Any] = {"dlib space share": float(both_sharp.mean())}
    for name, scores in (("gated", gated), ("student", student),
                         ("pair space", np.where(both_sharp, gated, student))):
        rates = []
        for far in GALLERY_FARS:
            threshold = threshold_at_far(scores[~genuine], far)
            rates.append(float("nan") if threshold is None
                         else float(np.mean(scores[genuine] >= threshold)))
        row[name] = tuple(rates)
    return row


def open_set_rows(spaces: Spaces, ident: OpenSetProtocol, side: int, cross: bool
                  ) -> dict[str, Any]:
    """Open-set FNIR at FPIR 1e-2 / 1e-3 (``lrfr eval``'s protocol: half the people enrolled,
    the others' probes non-mated) of every rule; the pair space searched as the service
    does, stored gallery vectors against each probe's query vector."""
    gg, sg, hg = spaces.get(None if cross else side, ident.gallery)
    gp, sp, hp = spaces.get(side, ident.probes)
    gn, sn, hn = spaces.get(side, ident.nonmated)
    row: dict[str, Any] = {"sharp probe share": float(hp.mean())}
    searched = {
        "gated": (gg, gp, gn), "student": (sg, sp, sn),
        "pair space": (stored_vectors(gg, sg, hg),
                       queries(stored_vectors(gp, sp, hp), "pair-space"),
                       queries(stored_vectors(gn, sn, hn), "pair-space")),
    }
    for name, (gallery, probes, nonmated) in searched.items():
        fnir: dict[str, float | None] = score_open_set(  # type: ignore[assignment]
            ident, gallery, probes, nonmated)["fnir_at_fpir"]
        row[name] = tuple(np.nan if (value := fnir.get(str(f))) is None else float(value)
                          for f in GALLERY_FARS)
    return row


def gate_sweep(dlib: EmbeddingStore, student: EmbeddingStore, protocol: PairProtocol,
               ident: OpenSetProtocol, sides: list[int], gates: list[float]
               ) -> tuple[list[str], dict[str, dict[str, float]]]:
    """The pair's space with the gate moved: for each gate t, dlib's cosine for two faces
    with q >= t, else the students'; pairs (one threshold per space) and rank-1 against the
    gallery, ``dlib`` being the sharp branch on every face. A Markdown table, a row a gate,
    and the same numbers by gate for the JSON."""
    labels = protocol.labels.astype(bool)
    settings: list[tuple[str, int | None, int]] = [(f"both {s}", s, s) for s in sides]
    settings += [(f"112/{s}", None, s) for s in sides if s < 112]

    def parts(store_side: int | None, indices: np.ndarray) -> tuple[np.ndarray, ...]:
        return (dlib.get(store_side, indices), student.get(store_side, indices),
                dlib.quality(store_side, indices))

    head = ["gate q"] + [f"pairs {n}" for n, _, _ in settings] + ["mean pairs"]
    head += [f"rank-1 {n}" for n, _, _ in settings]
    lines = ["### The gate moved (pair's space)", "", "| " + " | ".join(head) + " |",
             "|---" * len(head) + "|"]
    records: dict[str, dict[str, float]] = {}
    for gate in gates:
        cells, accuracies, ranks = [], [], []
        for _, left_side, right_side in settings:
            dl, sl, ql = parts(left_side, protocol.left)
            dr, sr, qr = parts(right_side, protocol.right)
            in_dlib = (ql >= gate) & (qr >= gate)
            scores = np.where(in_dlib, np.einsum("ij,ij->i", dl, dr),
                              np.einsum("ij,ij->i", sl, sr)).astype(np.float64)
            accuracies.append(kfold_accuracy_by_group(
                scores, labels, protocol.folds, in_dlib).mean)
        mean = float(np.mean(accuracies))
        cells += [f"{100 * a:.2f}" for a in accuracies] + [f"{100 * mean:.2f}"]
        for _, gallery_side, probe_side in settings:
            dg, sg, qg = parts(gallery_side, ident.gallery)
            dp, sp, qp = parts(probe_side, ident.probes)
            gallery = stored_vectors(dg, sg, qg >= gate)
            probes = queries(stored_vectors(dp, sp, qp >= gate), "pair-space")
            found = search(probes, ident.probe_labels, gallery, ident.gallery_labels)
            summary: dict[str, Any] = identification_metrics(found, (1,), ())
            ranks.append(float(summary["rank1"]))
            cells.append(f"{100 * ranks[-1]:.2f}")
        lines.append(f"| {gate:.2f} | " + " | ".join(cells) + " |")
        names = [name for name, _, _ in settings]
        records[f"{gate:.2f}"] = {
            **{f"pairs {n}": float(a) for n, a in zip(names, accuracies, strict=True)},
            "mean pairs": mean,
            **{f"rank-1 {n}": r for n, r in zip(names, ranks, strict=True)},
        }
    return [*lines, ""], records


def markdown(rows: list[tuple[str, dict[str, Any]]], pairs: bool, title: str,
             unit: str | None = None) -> list[str]:
    """One Markdown table: a row per setting, a column per rule, then the share column
    (``pairs``: accuracy and sd; else two rates, e.g. rank-1 / rank-5)."""
    share = next(key for key in rows[0][1] if key.endswith("share"))
    unit = unit or ("accuracy % (sd)" if pairs else "rank-1 / rank-5 %")
    rules = [key for key in rows[0][1] if key != share]
    lines = [f"### {title}", "", f"| {unit} | " + " | ".join(rules) + f" | {share} |",
             "|---" * (len(rules) + 2) + "|"]
    for label, row in rows:
        if pairs:
            cells = [f"{100 * m:.2f} ({100 * s:.2f})" for m, s in (row[r] for r in rules)]
        else:
            cells = [f"{100 * a:.2f} / {100 * b:.2f}" for a, b in (row[r] for r in rules)]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {100 * row[share]:.1f} % |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gated", required=True, help="gated artifact (.onnx) or checkpoint (.pt)")
    parser.add_argument("--student", default=None, help="the student's checkpoint (default, "
                        "for a gated .onnx: its blurred branch, lrfr eval --branch blurred)")
    parser.add_argument("--data", default="../shared/data/lfw")
    parser.add_argument("--view", type=int, default=1)
    parser.add_argument("--pairs-file", default=None)
    parser.add_argument("--people-file", default="peopleDevTest.txt")
    parser.add_argument("--resolutions", default="112,28,14,7")
    parser.add_argument("--weights", default="", help="student weights w of fused rows, e.g. 0.5")
    parser.add_argument("--flip-sharp", action="store_true",
                        help="also flip test-time averaging on the sharp faces only")
    parser.add_argument("--gates", default="", help="also the pair's space with the gate "
                        "moved to each of these q (a gated checkpoint: its sharp branch on "
                        "every face), e.g. 2.5,3,3.5,4,4.58,5.2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True, help="Markdown table (a .json beside it)")
    args = parser.parse_args()
    try:
        sides = [int(s) for s in args.resolutions.split(",")]
        weights = [float(w) for w in args.weights.split(",") if w]
        gates = [float(g) for g in args.gates.split(",") if g]
    except ValueError as exc:
        raise SystemExit(f"--resolutions, --weights and --gates take comma-separated numbers: "
                         f"{exc}") \
            from exc
    if gates and args.gated.endswith(".onnx"):
        raise SystemExit("--gates needs a gated checkpoint (.pt): its sharp branch is run "
                         "on every face")
    if any(not 0.0 < w < 1.0 for w in weights):
        raise SystemExit(f"--weights must lie in (0, 1), got {args.weights}")
    if args.student is None and not (args.gated.endswith(".onnx") or Path(args.gated).is_dir()):
        raise SystemExit("--student is needed unless --gated is an ONNX artifact")
    if args.gated.endswith(".onnx") and load_metadata(args.gated).comparison != "cosine":
        raise SystemExit(f"{args.gated} already compares in the pair's space; pass the gated "
                         "graph it was made from (e.g. 2.1.0's: git show "
                         "b765ca8:models/bundled/lrfr.onnx)")
    torch.set_num_threads(args.threads)

    protocol = load_lfw(args.data, view=args.view, pairs_file=args.pairs_file)
    images, ident = join_images(
        protocol, load_lfw_identification(args.data, people_file=args.people_file)
    )
    gated = load_model(args.gated, threads=args.threads)
    sharp_branch = None  # --gates: the gated checkpoint's sharp branch, run on every face
    if gates:
        module = getattr(gated, "module", None)
        if not isinstance(module, QualityGated):
            raise SystemExit(f"{args.gated} is not a gated checkpoint")
        sharp_branch = module.sharp
    student = (load_model(args.student) if args.student
               else load_model(args.gated, threads=args.threads, branch="blurred"))
    faces = load_faces(images, FaceLoader("lfw"), progress=False)
    settings = EvalSettings(progress=False)
    spaces = Spaces(
        gated=EmbeddingStore(gated, faces, settings),
        student=EmbeddingStore(student, faces, settings),
        gate=gate_of(gated),
        flipped=EmbeddingStore(
            gated, faces,
            EvalSettings(progress=False, flip=True),
        ) if args.flip_sharp else None,
    )
    cross = [s for s in sides if s < 112]
    pair_table = [(f"both {s} px", pair_rows(spaces, protocol, s, False, weights)) for s in sides]
    pair_table += [(f"112 / {s} px", pair_rows(spaces, protocol, s, True, weights)) for s in cross]
    rank_table = [(f"both {s} px", rank_rows(spaces, ident, s, False, weights)) for s in sides]
    rank_table += [(f"112 / {s} px", rank_rows(spaces, ident, s, True, weights)) for s in cross]
    tar_table = [(f"both {s} px", tar_rows(spaces, ident, s, False)) for s in sides]
    tar_table += [(f"112 / {s} px", tar_rows(spaces, ident, s, True)) for s in cross]
    open_table = [(f"both {s} px", open_set_rows(spaces, ident, s, False)) for s in sides]
    open_table += [(f"112 / {s} px", open_set_rows(spaces, ident, s, True)) for s in cross]

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = [
        f"Pair space (experiments/pair_space.py): gated `{args.gated}`, student "
        f"`{args.student or 'its blurred branch'}`, gate q >= {spaces.gate:.3f}; "
        f"{protocol.name}, {protocol.pairs} pairs; {ident.name}, {len(ident.gallery)} "
        f"gallery people, {len(ident.probes)} probes.",
        "",
    ]
    sweep: list[str] = []
    sweep_records: dict[str, dict[str, float]] = {}
    if sharp_branch is not None:
        dlib = EmbeddingStore(TorchModuleModel(sharp_branch, name="sharp branch"), faces,
                              settings)
        sweep, sweep_records = gate_sweep(dlib, spaces.student, protocol, ident, sides, gates)
    text = "\n".join(header + sweep + markdown(pair_table, True, "Pairs")
                     + markdown(rank_table, False, "Identification (closed set)")
                     + markdown(tar_table, False, "Verification against the gallery",
                                unit="TAR % at FAR 1e-2 / 1e-3")
                     + markdown(open_table, False, "Identification (open set)",
                                unit="FNIR % at FPIR 1e-2 / 1e-3"))
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(
        {"gated": args.gated, "student": args.student, "gate": spaces.gate,
         "pairs": dict(pair_table), "identification": dict(rank_table),
         "verification_against_gallery": dict(tar_table),
         "open_set": dict(open_table), "gates": sweep_records}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
