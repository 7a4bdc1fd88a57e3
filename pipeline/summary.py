"""The summary printed at the end of a run, from the run directory's files."""

from __future__ import annotations

import glob
import json
import os

from components import report as report_module
from pipeline.runner import run_paths


def latest_pushed_model(out_dir: str) -> str | None:
    """Returns the newest model folder Pusher wrote, or None."""
    folders = sorted(
        glob.glob(os.path.join(run_paths(out_dir)["serving_model"], "*")),
        key=os.path.getmtime,
    )
    return folders[-1] if folders else None


def render(out_dir: str, timings: list[dict], elapsed: float, stop_after_gate: bool) -> str:
    """Returns the end-of-run summary text."""
    paths = run_paths(out_dir)
    lines = ["", "Summary", "======="]
    cached = [t["node"] for t in timings if t.get("cached")]
    lines.append(f"wall time: {elapsed:.1f} s for {len(timings)} components")
    if cached:
        lines.append(
            f"cached: {len(cached)} of {len(timings)} components reused earlier "
            f"results ({', '.join(cached)})"
        )
    report_json = os.path.join(paths["report"], "report.json")
    if os.path.exists(report_json):
        loaded = report_module.load_report(report_json)
        lines.append(report_module.render_markdown(loaded))
    check = os.path.join(paths["report"], "post_transform_check.json")
    if os.path.exists(check):
        with open(check, encoding="utf-8") as f:
            post = json.load(f)
        rows = ", ".join(f"{s} {v['rows']:,}" for s, v in sorted(post["splits"].items()))
        state = "none" if not post["findings"] else f"{len(post['findings'])} findings"
        lines.append(f"post-transform check: non-finite values: {state} (rows: {rows})")
    if not stop_after_gate:
        model = latest_pushed_model(out_dir)
        if model:
            metrics_path = os.path.join(model, "metrics.json")
            if os.path.exists(metrics_path):
                with open(metrics_path, encoding="utf-8") as f:
                    metrics = json.load(f)
                lines.append(
                    f"training: {metrics['train_steps']} steps, final loss "
                    f"{metrics['final_train_loss']:.4f}, skipped steps "
                    f"{metrics['skipped_steps']}, masked examples {metrics['masked_examples']}"
                )
                k = next(
                    (key.split("_")[-1] for key in metrics if key.startswith("recall_at_")), "10"
                )
                lines.append(
                    f"eval: loss {metrics['eval_loss']:.4f}, AUC {metrics['auc']:.3f}, "
                    f"Recall@{k} {metrics[f'recall_at_{k}']:.4f} (popularity "
                    f"{metrics[f'popularity_recall_at_{k}']:.4f}), NDCG@{k} "
                    f"{metrics[f'ndcg_at_{k}']:.4f} (popularity "
                    f"{metrics[f'popularity_ndcg_at_{k}']:.4f}) over "
                    f"{metrics['eval_users']:,} users"
                )
            lines.append(f"model pushed to: {model}")
    lines.append(f"metadata store: {paths['metadata']}")
    return "\n".join(lines)
