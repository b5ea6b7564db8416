"""Paper-style tables (Markdown) and confusion-matrix plots from an experiment's results.json."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fer_jax import crf_inputs  # noqa: E402

# Published accuracies (%) of Hasani & Mahoor, FG 2017: (with CRF, without CRF). Quoted, not ours.
PAPER_TABLE_I = {  # Subject-independent.
    "ck_plus": (93.04, 85.77),
    "mmi": (78.68, 55.83),
    "fera": (66.66, 49.64),
}
PAPER_TABLE_II = {  # Cross-database: the held-out test database.
    "ck_plus": (73.91, 64.81),
    "mmi": (68.51, 52.83),
    "fera": (53.33, 47.05),
}
DISPLAY = {"ck_plus": "CK+", "mmi": "MMI", "fera": "FERA", "synthetic_expressions": "Synthetic"}


def _pct(summary: dict) -> str:
  if summary.get("std") is None:  # One fold: no spread to show.
    return f"{100 * summary['mean']:.2f}"
  return f"{100 * summary['mean']:.2f} ± {100 * summary['std']:.2f}"


_KIND_ORDER = {"cnn": 0, "crf": 1, "joint": 2}
_SPEC_ORDER = {"logits": 0, "geometry": 1, "logits+geometry": 2}


def row_label(row: str, primary: str = "logits") -> str:
  """The table's name of a results row: "cnn", "crf/<spec>", "joint/<spec>"."""
  if row == "cnn":
    return "CNN (softmax, no CRF)"
  kind, spec = row.split("/", 1)
  name = crf_inputs.label(spec)
  if kind == "joint":
    name = "joint " + name
  notes = (["the paper's method"] if row == "crf/logits" else []) + (
      ["primary"] if kind == "crf" and spec == primary and spec != "logits" else [])
  return name + (f" ({', '.join(notes)})" if notes else "")


def row_order(row: str):
  """Sort key: CNN, CRF rows (logits, geometry, fused, others), joint rows."""
  kind, _, spec = row.partition("/")
  return _KIND_ORDER.get(kind, 3), _SPEC_ORDER.get(spec, 3), spec


def _paper_cell(row: str, paper) -> str:
  if paper is None:
    return "n/a"
  return {"cnn": str(paper[1]), "crf/logits": str(paper[0])}.get(row, "")


def results_table(results: dict, paper) -> list:
  """Markdown lines of the one table: a row per method, frame and sequence accuracy, the paper."""
  s = results["summary"]
  rows = s.get("rows") or {  # Results written before rows existed: frame accuracy only.
      "cnn": {"frame_accuracy": s["accuracy_softmax"]},
      "crf/logits": {"frame_accuracy": s["accuracy_crf"]}}
  primary = results.get("crf_features", "logits")
  cell = lambda v, m: _pct(v[m]) if m in v else "n/a"
  lines = ["| Method | Frame accuracy % | Sequence accuracy %, last frame | Sequence accuracy %, "
           "majority of non-neutral frames | Paper (Hasani & Mahoor 2017), frame % |",
           "| --- | --- | --- | --- | --- |"]
  for row in sorted(rows, key=row_order):
    v = rows[row]
    lines.append(f"| {row_label(row, primary)} | {cell(v, 'frame_accuracy')} | "
                 f"{cell(v, 'sequence_accuracy_last')} | {cell(v, 'sequence_accuracy_majority')} | "
                 f"{_paper_cell(row, paper)} |")
  n = len(results["folds"])
  lines += ["", f"Mean ± sample standard deviation (ddof = 1) over the {n} folds run" if n > 1 else
            "One fold run: the mean of one value, no standard deviation.",
            "Sequence accuracy, last frame: the label predicted for a sequence's last frame (CK+'s apex) "
            "against its true label; majority: the most frequent non-neutral label predicted in the "
            "sequence against the sequence's emotion (ties: the class seen latest).", ""]
  return lines


def paper_row(table: str, database: str):
  """The paper's (with CRF, without CRF) for a database, or None where the paper has no number."""
  return (PAPER_TABLE_I if table == "I" else PAPER_TABLE_II).get(database)


def markdown(results: dict) -> str:
  """Renders results.json as the paper's Table I or II layout beside the paper's published numbers."""
  database, table = results["database"], results["table"]
  paper = paper_row(table, database)
  name = DISPLAY.get(database, database)
  s = results["summary"]
  lines = [
      f"# {name}: Table {table} ({'subject-independent' if table == 'I' else 'cross-database'})",
      "",
      f"Protocol: {results['protocol']}",
      f"Folds run: {len(results['folds'])}; frames tested per fold: "
      + ", ".join(str(f["sizes"]["test_frames"]) for f in results["folds"]) + ".",
      "",
  ]
  lines += results_table(results, paper)
  timed = [f["seconds"] for f in results["folds"] if "seconds" in f]
  if timed:
    stages = [k for k in timed[0] if all(k in t for t in timed)]
    lines += ["Wall time per fold, seconds (mean over folds; stage 1 = CNN training, then CNN outputs "
              "for every frame, each CRF row's fit and sigma^2 selection, stage 3): "
              + ", ".join(f"{k} {np.mean([t[k] for t in timed]):.0f}" for k in stages) + ".", ""]
  variants = s.get("variants", {})
  if variants:
    lines += [
        f"CRF variants on {results.get('crf_features', 'logits')} (training features / sigma^2 "
        "selection); the first is the configured one:",
        "",
        "| CRF training features | sigma^2 chosen by | CNN + CRF accuracy % |",
        "| --- | --- | --- |",
    ]
    for key, summary in variants.items():
      features, selection = key.split("/")
      lines.append(f"| {features} | {selection} | {_pct(summary)} |")
    lines.append("")
  classes = results["class_names"]
  lines += ["Per-class accuracy % (mean over folds):", "",
            "| Class | " + " | ".join(classes) + " |",
            "| --- |" + " --- |" * len(classes)]
  for method in ("softmax", "crf"):
    per_fold = np.array([f[f"per_class_{method}"] for f in results["folds"]], float)
    seen = ~np.isnan(per_fold)
    per_class = np.where(seen.any(0), np.where(seen, per_fold, 0).sum(0) / np.maximum(seen.sum(0), 1),
                         np.nan)
    cells = " | ".join("n/a" if np.isnan(x) else f"{100 * x:.1f}" for x in per_class)
    name = "CNN" if method == "softmax" else crf_inputs.label(results.get("crf_features", "logits"))
    lines.append(f"| {name} | {cells} |")
  lines += ["", "Chosen sigma^2 per fold: "
            + ", ".join(f"{f['sigma2']:g}" for f in results["folds"]) + ".", ""]
  if paper is None:
    lines.append("The paper reports no number for this data set; its column is n/a.")
  return "\n".join(lines) + "\n"


def plot_confusion(confusion, class_names, title: str, path: str):
  """Writes a row-normalised confusion matrix (rows: true class) as a PNG."""
  confusion = np.asarray(confusion, np.float64)
  norm = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
  k = len(class_names)
  fig, ax = plt.subplots(figsize=(1.0 + 0.7 * k, 1.0 + 0.6 * k))
  ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
  for i in range(k):
    for j in range(k):
      ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center",
              color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
  ax.set_xticks(range(k), class_names, rotation=45, ha="right")
  ax.set_yticks(range(k), class_names)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def write(results: dict, workdir: str):
  """Writes report.md, confusion_softmax.png and confusion_crf.png (confusions summed over folds)."""
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write(markdown(results))
  for method in ("softmax", "crf"):
    confusion = np.sum([f[f"confusion_{method}"] for f in results["folds"]], axis=0)
    title = f"{DISPLAY.get(results['database'], results['database'])}: " + (
        "CNN" if method == "softmax" else "CNN + CRF")
    plot_confusion(confusion, results["class_names"], title,
                   os.path.join(workdir, f"confusion_{method}.png"))
