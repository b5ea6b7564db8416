"""Paper-style tables (Markdown) and confusion-matrix plots from an experiment's results.json."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

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
  return f"{100 * summary['mean']:.2f} ± {100 * summary['std']:.2f}"


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
      "| Method | Ours: accuracy % (mean ± std over folds) | Paper (Hasani & Mahoor 2017) % |",
      "| --- | --- | --- |",
      f"| CNN (softmax, no CRF) | {_pct(s['accuracy_softmax'])} | {paper[1] if paper else 'n/a'} |",
      f"| CNN + CRF | {_pct(s['accuracy_crf'])} | {paper[0] if paper else 'n/a'} |",
      "",
  ]
  variants = s.get("variants", {})
  if variants:
    lines += [
        "CRF variants (training features / sigma^2 selection); the first is the configured one:",
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
    lines.append(f"| {'CNN' if method == 'softmax' else 'CNN + CRF'} | {cells} |")
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
