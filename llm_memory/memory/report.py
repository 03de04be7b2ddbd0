"""The memory benchmark's reports: a Markdown table, JSON, a PNG and an interactive Plotly page.

A fine-tuned memory model keeps its own reports in its folder (``memory_results/TASK.json``), from
which the demo's Memory tab reads its curves and the tasks it was trained for.
"""

import json
import os
from collections.abc import Mapping
from pathlib import Path

from llm_memory.memory.probes import TASKS

# A fine-tuned memory model keeps its own reports here, inside its folder; the Memory tab reads them.
MODEL_RESULTS_DIR = "memory_results"


def markdown_table(report: dict) -> str:
    distances = report["distances"]
    cells = {(row["variant"], row["distance"]): row for row in report["results"]}
    lines = [
        f"Task `{report['task']}`, window {report['window']} tokens, {report['samples']} probes per distance; "
        "exact-match accuracy (per-token accuracy).",
        "",
        "| variant | " + " | ".join(f"{d}{'*' if d >= report['window'] else ''}" for d in distances) + " |",
        "|---|" + "---|" * len(distances),
    ]
    for variant in report["variants"]:
        values = [cells[(variant, d)] for d in distances]
        lines.append(
            f"| {variant} | "
            + " | ".join(f"{v['accuracy']:.2f} ({v['token_accuracy']:.2f})" for v in values)
            + " |"
        )
    chance = report["chance"]
    per_token = f" ({chance['per_token']:.2f})" if chance["per_token"] is not None else ""
    lines.append(f"| chance | {chance['exact']:.2g}{per_token} |" + " |" * (len(distances) - 1))
    guess = report.get("window_guess")
    if guess:
        lines.append(
            "| guess from the window | " + " | ".join(f"{guess[str(d)]:.2f}" for d in distances) + " |"
        )
    lines += ["", f"\\* beyond the window. Chance: {chance['note']}."]
    if guess:
        lines[-1] += (
            " Guess from the window: picking among the answers of the right form that the question's "
            "window names (attention alone, guessing from context)."
        )
    return "\n".join(lines)


def accuracy_figure(report: dict):
    """Plotly figure of exact-match accuracy against distance, one line per variant."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for variant in report["variants"]:
        rows = sorted((r for r in report["results"] if r["variant"] == variant), key=lambda r: r["distance"])
        figure.add_trace(
            go.Scatter(
                x=[r["distance"] for r in rows],
                y=[r["accuracy"] for r in rows],
                customdata=[[r["token_accuracy"], r["fact_in_reach"]] for r in rows],
                mode="lines+markers",
                name=variant,
                hovertemplate="distance %{x}<br>accuracy %{y:.2f}<br>per-token %{customdata[0]:.2f}"
                "<br>fact in attention's reach %{customdata[1]:.0%}<extra>" + variant + "</extra>",
            )
        )
    figure.add_hline(y=report["chance"]["exact"], line_dash="dot", annotation_text="chance")
    guess = report.get("window_guess")
    if guess:
        figure.add_trace(
            go.Scatter(
                x=report["distances"],
                y=[guess[str(d)] for d in report["distances"]],
                mode="lines",
                line={"dash": "dot", "color": "gray"},
                name="guess from the window",
                hovertemplate="distance %{x}<br>guess %{y:.2f}<extra>guess from the window</extra>",
            )
        )
    # A trace, not add_vline: on a log axis plotly places shapes by log10(x), which would push it off the chart.
    figure.add_trace(
        go.Scatter(
            x=[report["window"], report["window"]],
            y=[0, 1],
            mode="lines",
            line={"dash": "dash", "color": "black", "width": 1},
            name="attention window",
            hoverinfo="skip",
        )
    )
    figure.update_layout(
        title=f"{report['task']}: recall against distance to the fact",
        xaxis={
            "title": "distance from fact to end of question (tokens)",
            "type": "log",
            "tickvals": report["distances"],
        },
        yaxis={"title": "exact-match accuracy", "range": [-0.02, 1.02]},
        template="plotly_white",
    )
    return figure


def save_png(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for variant in report["variants"]:
        rows = sorted((r for r in report["results"] if r["variant"] == variant), key=lambda r: r["distance"])
        ax.plot([r["distance"] for r in rows], [r["accuracy"] for r in rows], marker="o", label=variant)
    ax.axhline(report["chance"]["exact"], color="gray", linestyle=":", label="chance")
    guess = report.get("window_guess")
    if guess:
        distances = report["distances"]
        ax.plot(
            distances,
            [guess[str(d)] for d in distances],
            color="gray",
            linestyle="-.",
            label="guess from the window",
        )
    ax.axvline(report["window"], color="black", linestyle="--", linewidth=0.8, label="attention window")
    ax.set_xscale("log")
    ax.set_xticks(report["distances"], [str(d) for d in report["distances"]])
    ax.minorticks_off()
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("distance from fact to end of question (tokens)")
    ax.set_ylabel("exact-match accuracy")
    ax.set_title(f"{report['task']}: recall against distance to the fact")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_report(path: str | os.PathLike) -> dict | None:
    """A benchmark JSON, or None when there is none at ``path``."""
    path = Path(path)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def save_report(report: dict, path: Path) -> None:
    """Writes a report as ``load_report`` reads it."""
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def write_outputs(report: dict, json_path: Path, plot_dir: Path) -> dict[str, Path]:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    plot_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": json_path,
        "png": plot_dir / f"{json_path.stem}.png",
        "html": plot_dir / f"{json_path.stem}.html",
    }
    save_report(report, paths["json"])
    save_png(report, paths["png"])
    # plotly.js inline: the page works offline and from a file.
    accuracy_figure(report).write_html(paths["html"], include_plotlyjs=True, full_html=True)
    return paths


def model_reports(folder: str | os.PathLike | None) -> dict[str, dict]:
    """The memory benchmark reports a model folder carries (``memory_results/TASK.json``), by task."""
    if not folder or not Path(folder, MODEL_RESULTS_DIR).is_dir():
        return {}
    reports = {}
    for task in TASKS:
        report = load_report(Path(folder, MODEL_RESULTS_DIR, f"{task}.json"))
        if report is not None:
            reports[task] = report
    return reports


def fine_tuning_stages(reports: Mapping[str, dict]) -> list[dict]:
    """The fine-tuning runs that made a model, oldest first, from its reports: each a dict with the
    ``model`` it started from, its ``tasks``, ``curriculum_steps``, ``train_steps`` and ``command``.
    Reports written before stages were recorded stand for one stage."""
    for task, report in reports.items():
        if report.get("stages") is not None:
            return [dict(stage) for stage in report["stages"]]
        if report.get("train_steps") or report.get("curriculum_steps"):
            return [
                {
                    "model": report["model"],
                    "tasks": report.get("trained_tasks") or [task],
                    "curriculum_steps": report.get("curriculum_steps") or 0,
                    "train_steps": report.get("train_steps") or 0,
                    "command": report.get("command"),
                }
            ]
    return []


def trained_tasks(reports: Mapping[str, dict]) -> list[str]:
    """Tasks the model was fine-tuned on, in any of its stages, from its reports."""
    tasks = set()
    for task, report in reports.items():
        for stage in fine_tuning_stages({task: report}):
            tasks.update(stage["tasks"])
    return [task for task in TASKS if task in tasks]
