"""Writes evaluation results: ``results.json``, ``results.csv``, ``table.md`` and plots.

The Markdown tables follow the deck's layout: rows are resolutions (or SCface
distances), columns the metrics; :func:`compare_table` joins several results into the
deck's big table with one column per model and one row per dataset/resolution/metric.
Percentages are printed with two decimals; a metric the pair count cannot measure
(e.g. TAR at FAR 1e-3 with fewer than 1000 negative pairs) prints as ``-``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from training.eval.datasets import SCFACE_DISTANCES_M
from training.eval.runner import EvaluationRun

PROTOCOL_TITLES = {
    "lfw-view2": "LFW",
    "lfw-view1": "LFW View 1",
    "survface": "QMUL-SurvFace",
    "scface": "SCface",
    "tinyface": "TinyFace",
    "folder": "Folder",
}


def _pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100.0 * float(value):.2f}"


def _pct_std(mean: Any, std: Any) -> str:
    return f"{_pct(mean)} ± {_pct(std)}" if mean is not None else "-"


def _res_label(key: str) -> str:
    return "native" if key == "native" else f"{key} px"


def _markdown(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return lines


def _flatten(summary: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalar metrics of a summary as flat columns (``tar_at_far_0.01`` ...)."""
    flat: dict[str, Any] = {}
    for key, value in summary.items():
        if key == "groups" or isinstance(value, list):
            continue
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}_"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def csv_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (setting, resolution) with every scalar metric; identification
    scored beside the pairs adds ``identification_downsampled`` / ``_cross_resolution``
    rows."""
    rows = []
    for setting in ("resolutions", "cross_resolution"):
        for key, summary in results.get(setting, {}).items():
            name = "downsampled" if setting == "resolutions" else "cross_resolution"
            if results.get("kind") == "identification":
                name = "probes_degraded"
            rows.append({
                "protocol": results["protocol"], "setting": name, "resolution": key,
                **_flatten(summary),
            })
    ident = results.get("identification") or {}
    for setting in ("resolutions", "cross_resolution"):
        for key, summary in ident.get(setting, {}).items():
            name = "downsampled" if setting == "resolutions" else "cross_resolution"
            rows.append({
                "protocol": ident["protocol"], "setting": f"identification_{name}",
                "resolution": key, **_flatten(summary),
            })
    return rows


def _verification_table(section: dict[str, Any], fars: Iterable[str]) -> list[str]:
    fars = list(fars)
    header = ["Resolution", "Accuracy (%)", *[f"TAR@FAR={far} (%)" for far in fars], "AUC (%)"]
    return _markdown(header, (
        [
            _res_label(key), _pct_std(m["accuracy"], m["std"]),
            *[_pct(m["tar_at_far"].get(far)) for far in fars], _pct(m["auc"]),
        ]
        for key, m in section.items()
    ))


def _identification_table(results: dict[str, Any]) -> list[str]:
    section = results["resolutions"]
    first = next(iter(section.values()))
    groups = sorted(first.get("groups", {}))
    if not groups:
        return _open_set_table(section, list(first.get("fnir_at_fpir", {})), rows="Probes")

    def title(g: str) -> str:  # SCface: the deck shows rank-1 per distance
        metres = SCFACE_DISTANCES_M.get(int(g[1:])) if g[1:].isdigit() else None
        return f"{g} ({metres:.2f} m)" if metres is not None else g

    header = ["Probes", *[f"{title(g)} rank-1 (%)" for g in groups], "all rank-1 (%)"]
    return _markdown(header, (
        [_res_label(key), *[_pct(m.get(f"rank1_{g}")) for g in groups], _pct(m.get("rank1"))]
        for key, m in section.items()
    ))


def _open_set_table(
    section: dict[str, Any], fpirs: Sequence[str], rows: str = "Resolution"
) -> list[str]:
    """Rows = resolutions: rank-k, then FNIR at each FPIR target."""
    first = next(iter(section.values()))
    ranks = [k for k in first if k.startswith("rank") and "_" not in k]  # not rank1_<group>
    header = [rows, *[f"Rank-{r[4:]} (%)" for r in ranks],
              *[f"FNIR@FPIR={f} (%)" for f in fpirs]]
    return _markdown(header, (
        [_res_label(key), *[_pct(m[r]) for r in ranks],
         *[_pct(m["fnir_at_fpir"].get(f)) for f in fpirs]]
        for key, m in section.items()
    ))


def _identification_beside(ident: dict[str, Any]) -> list[str]:
    """The identification scored beside the pairs: its counts and both settings."""
    fpirs = ident["fpirs"]
    lines = [
        "", f"Identification ({ident['protocol']}): closed set {ident['gallery']} enrolled, "
        f"{ident['probes']} probes; open set {ident['open_set_gallery']} enrolled, "
        f"{ident['mated_probes']} mated and {ident['nonmated_probes']} non-mated probes "
        "(rank-1 FNIR at the FPIR target).", "",
        "Gallery and probes at the resolution:", "",
    ]
    lines += _open_set_table(ident["resolutions"], fpirs)
    if ident.get("cross_resolution"):
        lines += ["", "Cross-resolution (gallery at 112 px, probes at the resolution):", ""]
        lines += _open_set_table(ident["cross_resolution"], fpirs)
    return lines


def _far_text(value: Any) -> str:
    return "–" if value is None else f"{value:.1e}"


def _decisions_table(section: dict[str, Any]) -> list[str]:
    """Rows = resolutions; per target FAR: realised FAR, TAR, undecidable genuine."""
    rows = {key: m["decisions"] for key, m in section.items() if m.get("decisions")}
    if not rows:
        return []
    fars = list(next(iter(rows.values())))
    header = ["Resolution"]
    for far in fars:
        header += [f"FAR@{far}", f"TAR@{far} (%)", f"undecidable@{far} (%)"]
    table = []
    for key, decisions in rows.items():
        cells = [_res_label(key)]
        for far in fars:
            d = decisions.get(far, {})
            cells += [_far_text(d.get("far")), _pct(d.get("tar")),
                      _pct(d.get("undecidable_genuine"))]
        table.append(cells)
    lines = _markdown(header, table)
    impostors = next(iter(rows.values()))[fars[0]]["impostors"]
    lines += ["", f"({impostors:,} impostor pairs per resolution.)"]
    return lines


def markdown_table(results: dict[str, Any]) -> str:
    """The deck-layout table of one result (rows = resolutions)."""
    model = results.get("model", {})
    title = PROTOCOL_TITLES.get(results["protocol"], results["protocol"])
    count = (
        f"{results['pairs']} pairs" if "pairs" in results
        else f"{results.get('probes')} probes, {results.get('gallery')} gallery images"
    )
    limit = f", limited to {results['limit']}" if results.get("limit") else ""
    camera = " with camera effects" if results["settings"].get("camera") else ""
    lines = [
        f"## {title} ({results['protocol']}): {model.get('name', '?')} "
        f"{model.get('version') or ''}".rstrip(),
        "",
        f"{count}{limit}; degradation {results['settings']['down']} down / "
        f"{results['settings']['up']} up{camera}; faces: {results['settings']['face_mode']}.",
        "",
    ]
    if results.get("kind") == "verification":
        first = next(iter(results["resolutions"].values()))
        fars = list(first["tar_at_far"])
        lines += ["Both images at the resolution (downsampled):", ""]
        lines += _verification_table(results["resolutions"], fars)
        if results.get("cross_resolution"):
            lines += ["", "Cross-resolution (first image at 112 px, second at the resolution):", ""]
            lines += _verification_table(results["cross_resolution"], fars)
        for name, title_text in (("resolutions", "both degraded"),
                                 ("cross_resolution", "cross-resolution")):
            table = _decisions_table(results.get(name) or {})
            if table:
                lines += ["", f"The service's decisions ({title_text}): realised FAR over all "
                          "impostor pairs, TAR, and the share of genuine pairs answered "
                          "'undecidable':", ""]
                lines += table
        if results.get("identification"):
            lines += _identification_beside(results["identification"])
    else:
        lines += ["Gallery at full quality, probes at the resolution:", ""]
        lines += _identification_table(results)
    return "\n".join(lines) + "\n"


def headline_rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    """``(row label, value)`` pairs of one result for the comparison table."""
    protocol = results["protocol"]
    title = PROTOCOL_TITLES.get(protocol, protocol)
    if protocol == "folder" and results.get("dataset"):
        title = f"Folder {Path(results['dataset']).name}"
    rows: list[tuple[str, str]] = []
    for key, m in results.get("resolutions", {}).items():
        where = "" if key == "native" else f" {key} px"
        if results.get("kind") == "verification":
            rows.append((f"{title}{where} accuracy", _pct_std(m["accuracy"], m["std"])))
            if protocol == "survface" or key == "native":
                rows += [(f"{title}{where} TAR@FAR={far}", _pct(v))
                         for far, v in m["tar_at_far"].items()]
                rows.append((f"{title}{where} AUC", _pct(m["auc"])))
        elif m.get("groups"):
            rows += [(f"{title}{where} {g} rank-1", _pct(m.get(f"rank1_{g}")))
                     for g in sorted(m["groups"])]
        else:
            rows += [(f"{title}{where} rank-{k[4:]}", _pct(v)) for k, v in m.items()
                     if k.startswith("rank") and "_" not in k]
            if protocol == "folder":
                rows += [(f"{title}{where} FNIR@FPIR={f}", _pct(v))
                         for f, v in m["fnir_at_fpir"].items()]
    for key, m in results.get("cross_resolution", {}).items():
        rows.append((f"{title} cross 112/{key} px accuracy", _pct_std(m["accuracy"], m["std"])))
    ident = results.get("identification") or {}
    for setting, prefix in (("resolutions", ""), ("cross_resolution", "cross 112/")):
        for key, m in ident.get(setting, {}).items():
            where = f"{title} identification {prefix}{_res_label(key)}"
            rows += [(f"{where} rank-{k[4:]}", _pct(v)) for k, v in m.items()
                     if k.startswith("rank")]
            rows += [(f"{where} FNIR@FPIR={f}", _pct(v)) for f, v in m["fnir_at_fpir"].items()]
    return rows


def compare_table(results: Sequence[dict[str, Any]], labels: Sequence[str] | None = None) -> str:
    """The deck's big table: one column per result file, rows = dataset/resolution."""
    if labels is None:
        labels = []
        for r in results:
            model = r.get("model", {})
            labels.append(f"{model.get('name', '?')} {model.get('version') or ''}".strip())
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    table: dict[str, dict[int, str]] = {}
    for column, r in enumerate(results):
        for row, value in headline_rows(r):
            table.setdefault(row, {})[column] = value
    header = ["Dataset / resolution (%)", *unique]
    lines = _markdown(header, (
        [row, *[values.get(column, "") for column in range(len(unique))]]
        for row, values in table.items()
    ))
    return "\n".join(lines) + "\n"


def _plot_accuracy(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    verification = results.get("kind") == "verification"
    series: dict[str, dict[str, float]] = {}
    for key, m in results["resolutions"].items():
        if verification:
            series.setdefault("downsampled", {})[key] = m["accuracy"]
        elif m.get("groups"):
            for g in sorted(m["groups"]):
                series.setdefault(f"rank-1 {g}", {})[key] = m[f"rank1_{g}"]
        else:
            series.setdefault("rank-1", {})[key] = m["rank1"]
    for key, m in results.get("cross_resolution", {}).items():
        series.setdefault("cross-resolution", {})[key] = m["accuracy"]
    ident = results.get("identification") or {}
    for setting, name in (("resolutions", "identification rank-1"),
                          ("cross_resolution", "identification rank-1, cross")):
        for key, m in ident.get(setting, {}).items():
            series.setdefault(name, {})[key] = m["rank1"]
    order = list(results["resolutions"])
    for name, points in series.items():
        xs = [order.index(k) for k in order if k in points]
        ax.plot(xs, [100 * points[order[x]] for x in xs], marker="o", label=name)
    ax.set_xticks(range(len(order)), [_res_label(k) for k in order])
    ax.set_xlabel("resolution")
    ax.set_ylabel(("accuracy / rank-1 (%)" if ident else "accuracy (%)") if verification
                  else "identification rate (%)")
    ax.set_title(f"{PROTOCOL_TITLES.get(results['protocol'], results['protocol'])}: "
                 f"{results.get('model', {}).get('name', '')}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_roc(run: EvaluationRun, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    verification = run.results.get("kind") == "verification"
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for setting, curves in run.curves.items():
        style = "-" if setting == "downsampled" else "--"
        for key, curve in curves.items():
            label = _res_label(key) + ("" if setting == "downsampled" else " (cross)")
            far = curve.far.clip(1e-5, 1.0)
            ax.plot(far, 100 * curve.tar, style, label=label)
    ax.set_xscale("log")
    ax.set_xlim(1e-4 if verification else 1e-3, 1.0)
    ax.set_xlabel("FAR" if verification else "FPIR (leave-own-identity-out searches)")
    ax.set_ylabel("TAR (%)" if verification else "1 - FNIR (%)")
    ax.set_title(("ROC" if verification else "Open-set identification")
                 + f": {PROTOCOL_TITLES.get(run.results['protocol'], run.results['protocol'])}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(run: EvaluationRun, out_dir: str | Path) -> dict[str, Path]:
    """Writes the five report files into ``out_dir``; returns them by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "results.json",
        "csv": out / "results.csv",
        "table": out / "table.md",
        "accuracy": out / "accuracy_vs_resolution.png",
        "roc": out / "roc.png",
    }
    paths["json"].write_text(json.dumps(run.results, indent=2) + "\n", encoding="utf-8")
    rows = csv_rows(run.results)
    columns = list(dict.fromkeys(c for row in rows for c in row))
    with paths["csv"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    paths["table"].write_text(markdown_table(run.results), encoding="utf-8")
    _plot_accuracy(run.results, paths["accuracy"])
    _plot_roc(run, paths["roc"])
    return paths
