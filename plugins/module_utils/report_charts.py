# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The report's pictures, drawn with matplotlib (headless, the Agg backend) as PNG files.

* :func:`latency_chart`: the latency distribution of the challenger and the champion (seconds), with the p95 limit;
* :func:`confusion_chart`: the confusion matrix of document types, expected against answered, per model;
* :func:`rates_chart`: each rate check with its confidence interval against its threshold (and each drop against
  the champion with the interval of the difference);
* :func:`probe_chart`: the client probe's requests through the run, per alias: latency, failures, and where the
  model group that answered changed (a detour, the switch).

Each function returns the data it drew, so a test (or a reader of ``charts.json``) can check what a picture shows.
Raises ``ImportError`` when matplotlib is missing (the module reports it with ``missing_required_lib``).
"""

from __future__ import annotations

MATPLOTLIB_IMPORT_ERROR = None
try:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot
except ImportError as exc:  # pragma: no cover - reported by the module
    MATPLOTLIB_IMPORT_ERROR = exc

DPI = 100
NO_ANSWER = "(no valid answer)"


def _require():
    if MATPLOTLIB_IMPORT_ERROR is not None:
        raise ImportError(f"the report's pictures need matplotlib: {MATPLOTLIB_IMPORT_ERROR}")


def _save(figure, path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI, format="png", metadata={"Software": None})
    pyplot.close(figure)


def latency_chart(path, series, limit=None):
    """Latency per request of each model (label -> seconds) as a box plot with the points over it, and the p95 limit.

    :returns: ``{"series": {label: latencies}, "limit": limit}``
    """
    _require()
    labels = [label for label, values in series.items() if values]
    figure, axes = pyplot.subplots(figsize=(6.4, 3.6))
    if labels:
        axes.boxplot(
            [series[label] for label in labels], orientation="horizontal", tick_labels=labels, showfliers=False
        )
        for row, label in enumerate(labels, start=1):
            values = series[label]
            axes.scatter(values, [row] * len(values), s=12, alpha=0.6, zorder=3)
    if limit is not None:
        axes.axvline(limit, color="red", linestyle="--", label=f"p95 limit {limit:g} s")
        axes.legend(loc="lower right")
    axes.set_xlabel("latency per document (s)")
    axes.set_title("Latency: challenger and champion")
    _save(figure, path)
    return {"series": {label: list(series[label]) for label in labels}, "limit": limit}


def confusion(per_document, classes):
    """The confusion matrix of ``per_document`` answers: rows the expected class, columns the answered class and a
    last column for no valid answer.

    :returns: ``{"classes": classes, "columns": classes + [NO_ANSWER], "counts": [[int]]}``
    """
    columns = [*classes, NO_ANSWER]
    counts = [[0] * len(columns) for _row in classes]
    for doc in per_document:
        if doc.get("expected") not in classes:
            continue
        got = doc.get("got") if doc.get("valid") and doc.get("got") in classes else NO_ANSWER
        counts[classes.index(doc["expected"])][columns.index(got)] += 1
    return {"classes": list(classes), "columns": columns, "counts": counts}


def confusion_chart(path, matrices):
    """One confusion matrix per model (label -> :func:`confusion`), side by side, each cell with its count."""
    _require()
    figure, axes_list = pyplot.subplots(1, max(len(matrices), 1), figsize=(4.8 * max(len(matrices), 1), 3.8))
    axes_list = axes_list if hasattr(axes_list, "__len__") else [axes_list]
    for axes, (label, matrix) in zip(axes_list, matrices.items(), strict=False):
        axes.imshow(matrix["counts"], cmap="Blues")
        axes.set_xticks(range(len(matrix["columns"])), matrix["columns"], rotation=30, ha="right")
        axes.set_yticks(range(len(matrix["classes"])), matrix["classes"])
        for row, counts in enumerate(matrix["counts"]):
            for column, count in enumerate(counts):
                axes.text(column, row, str(count), ha="center", va="center")
        axes.set_xlabel("answered")
        axes.set_ylabel("expected")
        axes.set_title(label)
    _save(figure, path)
    return dict(matrices)


def rates_chart(path, checks):
    """Each rate check (``gate_stats.evaluate``'s checks with ``low`` and ``high``) as its estimate with the interval
    and its threshold: a minimum for an absolute check, minus the allowed drop for a relative one."""
    _require()
    drawn = [c for c in checks if c.get("low") is not None and c.get("high") is not None]
    figure, axes = pyplot.subplots(figsize=(6.4, 0.8 + 0.6 * max(len(drawn), 1)))
    rows = []
    for row, check in enumerate(drawn):
        relative = check["kind"] == "relative"
        threshold = -check["threshold"] if relative else check["threshold"]
        label = f"{check['metric']} {'change vs champion' if relative else ''}".strip()
        colour = {"passed": "green", "failed": "red"}.get(check["verdict"], "orange")
        axes.errorbar(
            check["value"],
            row,
            # an interval's bound can lie a rounding error inside the estimate (1.0 and 0.9999999999999999)
            xerr=[[max(0.0, check["value"] - check["low"])], [max(0.0, check["high"] - check["value"])]],
            fmt="o",
            color=colour,
            capsize=4,
        )
        axes.plot([threshold, threshold], [row - 0.3, row + 0.3], color="black", linestyle="--")
        rows.append(
            {
                "label": label,
                "value": check["value"],
                "low": check["low"],
                "high": check["high"],
                "threshold": threshold,
                "verdict": check["verdict"],
            }
        )
    axes.set_yticks(range(len(rows)), [f"{r['label']} ({r['verdict']})" for r in rows])
    axes.set_xlabel("rate (fraction) or change of a rate, with its interval; dashed: the threshold")
    axes.set_title("Rates and their intervals")
    _save(figure, path)
    return {"rows": rows}


def probe_chart(path, events, started=None):
    """The probe's requests (``{alias, start (epoch s), duration (s), ok, model_group}``) over time, one row per
    alias: answers by model group, failures as red crosses, and a line where the model group that answered changed.

    :returns: ``{"aliases": {alias: {"requests", "failed", "changes": [{"at", "from", "to"}]}}}``
    """
    _require()
    aliases = sorted({e["alias"] for e in events})
    zero = started if started is not None else min((e["start"] for e in events), default=0.0)
    figure, axes_list = pyplot.subplots(
        max(len(aliases), 1), 1, figsize=(7.2, 1.0 + 1.8 * max(len(aliases), 1)), sharex=True
    )
    axes_list = axes_list if hasattr(axes_list, "__len__") else [axes_list]
    data = {}
    for axes, alias in zip(axes_list, aliases, strict=False):
        mine = sorted((e for e in events if e["alias"] == alias), key=lambda e: e["start"])
        groups = sorted({e.get("model_group") or "?" for e in mine if e["ok"]})
        for group in groups:
            points = [e for e in mine if e["ok"] and (e.get("model_group") or "?") == group]
            axes.scatter([e["start"] - zero for e in points], [e["duration"] for e in points], s=8, label=group)
        failed = [e for e in mine if not e["ok"]]
        if failed:
            axes.scatter(
                [e["start"] - zero for e in failed],
                [e["duration"] for e in failed],
                marker="x",
                color="red",
                label="failed",
            )
        changes, last = [], None
        for event in mine:
            group = event.get("model_group") if event["ok"] else None
            if group and last and group != last:
                changes.append({"at": round(event["start"] - zero, 3), "from": last, "to": group})
                axes.axvline(event["start"] - zero, color="grey", linestyle=":")
            last = group or last
        axes.set_ylabel("s")
        axes.set_title(f"{alias}: {len(mine)} requests, {len(failed)} failed")
        axes.legend(loc="upper right", fontsize="small")
        data[alias] = {"requests": len(mine), "failed": len(failed), "changes": changes}
    axes_list[-1].set_xlabel("seconds since the probe started; dotted: the model group that answers changed")
    _save(figure, path)
    return {"aliases": data}
