"""Tables of a CPU run (experiments/lfw_cpu_run.sh) for docs/training.md.

Reads, per head folder: ``validation.jsonl`` (periodic validation), ``metrics.jsonl``
(logged training scalars), ``results.json`` (``lrfr eval lfw``), ``model.json`` (the
artifact's metadata with the calibrated thresholds); writes Markdown to stdout.

    python experiments/summarise.py results/lfw_cpu > summary.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _jsonl(path: Path) -> list[dict[str, Any]]:
    by_step: dict[int, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            by_step[int(record["step"])] = record  # a resumed run may repeat steps
    return [by_step[s] for s in sorted(by_step)]


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}"


def final_table(runs: dict[str, Path], baseline: Path | None = None) -> list[str]:
    results = {head: json.loads((d / "results.json").read_text()) for head, d in runs.items()}
    if baseline is not None and baseline.is_file():
        results["pixels (floor)"] = json.loads(baseline.read_text())
    sides = list(next(iter(results.values()))["resolutions"])
    lines = [
        "| LFW View 1 pairsDevTest (1,000 pairs) | " + " | ".join(results) + " |",
        "|---|" + "---|" * len(results),
    ]
    for side in sides:
        cells = []
        for head in results:
            m = results[head]["resolutions"][side]
            cells.append(f"{_pct(m['accuracy'])} ± {_pct(m['std'])} (AUC {_pct(m['auc'])})")
        lines.append(f"| {side} px | " + " | ".join(cells) + " |")
    return lines


def curve_table(head: str, folder: Path) -> list[str]:
    validation = _jsonl(folder / "validation.jsonl")
    metrics = _jsonl(folder / "metrics.jsonl")
    keys = [k for k in validation[0] if k.endswith("/accuracy")]
    sides = [k.split("/")[0].removeprefix("lfw_") for k in keys]
    lines = [
        f"**{head}** (validation on a fixed balanced 400-pair subset of pairsDevTest)",
        "",
        "| step | epoch | minutes | train loss | " + " | ".join(f"{s} px" for s in sides) + " |",
        "|---|---|---|---|" + "---|" * len(sides),
    ]
    for record in validation:
        step = record["step"]
        near = [m for m in metrics if m["step"] <= step]
        loss = f"{near[-1]['train/loss']:.2f}" if near and step else "-"
        minutes = f"{near[-1]['elapsed_s'] / 60:.1f}" if near and step else "0"
        lines.append(
            f"| {step} | {record['epoch']} | {minutes} | {loss} | "
            + " | ".join(_pct(record[k]) for k in keys) + " |"
        )
    return lines


def training_table(runs: dict[str, Path]) -> list[str]:
    lines = [
        "| head | steps | images seen | img/s (mean of logged windows) | final lr | "
        "q HR / q LR | margin HR / LR |",
        "|---|---|---|---|---|---|---|",
    ]
    for head, folder in runs.items():
        metrics = _jsonl(folder / "metrics.jsonl")
        last = metrics[-1]
        config = folder / "config.yaml"
        batch = 64
        if config.is_file():
            for line in config.read_text().splitlines():
                if line.strip().startswith("batch_size:"):
                    batch = int(line.split(":")[1])
                    break
        speeds = [m["speed/images_per_second"] for m in metrics[1:]] or [0.0]
        margin = (
            f"{last.get('train/margin_hr', float('nan')):.3f} / "
            f"{last.get('train/margin_lr', float('nan')):.3f}"
        )
        lines.append(
            f"| {head} | {last['step']} | {last['step'] * batch} | "
            f"{sum(speeds) / len(speeds):.1f} | {last['train/lr']:.2e} | "
            f"{last['quality/hr']:.2f} / {last['quality/lr']:.2f} | {margin} |"
        )
    return lines


def thresholds_table(runs: dict[str, Path]) -> list[str]:
    lines = ["| head | FAR 1e-2 | FAR 1e-3 | FAR 1e-4 | impostor pairs |", "|---|---|---|---|---|"]
    for head, folder in runs.items():
        meta = json.loads((folder / "model.json").read_text())
        calibration = meta["extra"].get("calibration", {})
        tar = calibration.get("tar_at_threshold", {})
        cells = []
        for far in ("1e-2", "1e-3", "1e-4"):
            t = meta["thresholds"].get(far)
            cells.append("-" if t is None else f"{t:.3f} (TAR {_pct(tar.get(far))})")
        lines.append(f"| {head} | " + " | ".join(cells)
                     + f" | {calibration.get('impostor_pairs', '-')} |")
    return lines


def main(root: str) -> None:
    base = Path(root)
    runs = {d.name: d for d in sorted(base.iterdir()) if (d / "results.json").is_file()}
    if not runs:
        raise SystemExit(f"no run folders with results.json under {base}")
    out: list[str] = ["### Final evaluation (ONNX artifacts, `lrfr eval lfw --view 1`)", ""]
    out += [*final_table(runs, base / "baseline_pixels.json"), ""]
    out += ["### Learning curves (validation during training)", ""]
    for head, folder in runs.items():
        out += [*curve_table(head, folder), ""]
    out += ["### Training", "", *training_table(runs), ""]
    out += ["### Calibrated thresholds (cosine; TAR on the 500 genuine pairs)", ""]
    out += [*thresholds_table(runs), ""]
    sys.stdout.write("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/lfw_cpu")
