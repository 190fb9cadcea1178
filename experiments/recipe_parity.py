"""Compares the two halves of ``experiments/recipe_parity.sh``: the old commit's and this
checkout's one-epoch training runs (every logged metric, every weight: bit for bit), then
their gated exports of the same student (gate, thresholds, embeddings of LFW DevTest
crops at 112..7 px). Prints a markdown report; exits 1 when anything differs.

    python experiments/recipe_parity.py --out runs/recipe-parity --lfw ../shared/data/lfw
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from models.artifact import ModelMetadata, load_metadata
from models.quantize import compare_models
from training.crops import lfw_crops

#: logged values that measure the machine, not the training
_TIMINGS = ("elapsed_s", "speed/images_per_second")


def _metrics(run: Path) -> list[dict[str, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in _TIMINGS} for row in rows]


def _states(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    raw = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    return {part: raw[part] for part in ("backbone_state", "head_state")}


def _gate_search(report: Path) -> tuple[list[str], float]:
    """The gate search table a gate builder printed, and the gate it chose."""
    lines = report.read_text().splitlines()
    table = [line for line in lines if line.startswith("|")]
    chosen = next(line for line in lines if line.startswith("chosen gate q = "))
    return table, float(chosen.split("=")[1].split()[0])


def _cells(metadata: ModelMetadata) -> list[float | None]:
    calibration = metadata.quality_calibration
    if calibration is None:
        return []
    return [t for cell in calibration.cells for t in cell.thresholds.values()]


def _gap(a: float | None, b: float | None) -> float:
    if a is None or b is None:
        return 0.0 if a is b else math.inf
    return abs(a - b)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lfw", type=Path, required=True)
    parser.add_argument("--crops", type=int, default=900)
    args = parser.parse_args()
    failures: list[str] = []

    old, new = _metrics(args.out / "old"), _metrics(args.out / "new")
    differing = sum(a != b for a, b in zip(old, new, strict=False)) + abs(len(old) - len(new))
    print("| check | old | this checkout | same |\n|---|---|---|---|")
    print(f"| training steps logged | {len(old)} | {len(new)} | {len(old) == len(new)} |")
    print(f"| steps with any differing metric ({len(old[0])} metrics each) | | "
          f"{differing} | {differing == 0} |")
    if differing:
        failures.append("training metrics")
    old_states, new_states = _states(args.out / "old"), _states(args.out / "new")
    for part, old_state in old_states.items():
        new_state = new_states[part]
        same = old_state.keys() == new_state.keys() and all(
            torch.equal(old_state[k], new_state[k]) for k in old_state
        )
        values = sum(t.numel() for t in old_state.values())
        print(f"| {part}: {len(old_state)} tensors, {values:,} values | | | {same} |")
        if not same:
            failures.append(part)

    old_table, old_gate = _gate_search(args.out / "old-gate.md")
    new_table, new_gate = _gate_search(args.out / "new-gate.md")
    print(f"| gate search on pairsDevTrain: rows equal | {len(old_table)} | {len(new_table)} | "
          f"{old_table == new_table} |")
    print(f"| gate chosen (Laplacian q) | {old_gate} | {new_gate} | {old_gate == new_gate} |")
    if old_table != new_table or old_gate != new_gate:
        failures.append("gate")
    old_meta = load_metadata(args.out / "old.onnx")
    new_meta = load_metadata(args.out / "new.onnx")
    for far, threshold in sorted(old_meta.thresholds.items()):
        other = new_meta.thresholds.get(far)
        close = _gap(threshold, other) <= 1e-6
        print(f"| threshold at FAR {far} | {threshold} | {other} | {close} |")
        if not close:
            failures.append(f"threshold {far}")
    old_cells, new_cells = _cells(old_meta), _cells(new_meta)
    worst = max((_gap(a, b) for a, b in zip(old_cells, new_cells, strict=True)), default=0.0)
    print(f"| per-band thresholds ({len(old_cells)}): largest difference | | {worst:.2e} | "
          f"{worst <= 1e-6} |")
    if worst > 1e-6:
        failures.append("per-band thresholds")

    crops = lfw_crops(args.lfw, count=args.crops, people_file="peopleDevTest.txt")
    agreement = compare_models(args.out / "old.onnx", args.out / "new.onnx", crops)
    print(f"| embeddings of {agreement.faces} LFW DevTest crops at 112..7 px: min cosine / "
          f"max abs diff | | {agreement.min_cosine:.9f} / {agreement.max_abs_diff:.2e} | "
          f"{agreement.max_abs_diff <= 1e-6} |")
    if agreement.max_abs_diff > 1e-6:
        failures.append("embeddings")
    print(f"\n{'PARITY' if not failures else 'DIFFERENT: ' + ', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
