"""The demo's report folder: ``report.json``, a readable ``summary.md`` and two PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["write_report", "PLOTS"]

PLOTS = ("imp_accuracy_vs_density.png", "attack_strength.png")


def _pct(value: Any, digits: int = 2) -> str:
    return "—" if value is None else f"{float(value):.{digits}f}%"


def _num(value: Any) -> str:
    return "—" if value is None else f"{float(value):.3g}"


def _axes() -> tuple[Any, Any]:
    """A ``(figure, axes)`` pair of the report's size, drawn without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(5.5, 3.6), dpi=100)


def _save(fig: Any, ax: Any, path: Path, *, xlabel: str, ylabel: str, title: str, **legend: Any) -> None:
    """Label the axes, add the legend, write ``path`` and free the figure."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, **legend)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_imp(rounds: list[dict[str, Any]], path: Path) -> None:
    fig, ax = _axes()
    for accepted, marker, label in ((True, "o", "accepted"), (False, "x", "rejected (gap > ε)")):
        pts = [(r["density"] * 100, r["accuracy"]) for r in rounds if bool(r["accepted"]) == accepted]
        if pts:
            ax.scatter(*zip(*pts, strict=True), marker=marker, label=label)
    acc = [(r["density"] * 100, r["accuracy"]) for r in rounds if r["accepted"]]
    if len(acc) > 1:
        ax.plot(*zip(*acc, strict=True), alpha=0.5)
    ax.set_xscale("log")
    ax.invert_xaxis()
    _save(fig, ax, path, xlabel="density (% of prunable weights kept, log)", ylabel="test accuracy (%)",
          title="IMP with late rewinding")


def _plot_sweep(sweep: list[dict[str, Any]], path: Path) -> None:
    fig, ax = _axes()
    x = [r["fraction"] * 100 for r in sweep]
    ax.plot(x, [r["accuracy"] for r in sweep], "o-", label="test accuracy (%)")
    ax.plot(x, [100 * (r["v2_bit_agreement"] or 0) for r in sweep], "s--", label="V2 bit agreement (%)")
    for xi, r in zip(x, sweep, strict=True):
        ax.annotate("decoded" if r["decoded"] else "no decode", (xi, 100 * (r["v2_bit_agreement"] or 0)),
                    textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    ax.set_ylim(0, 105)
    _save(fig, ax, path, xlabel="pruning attack: share of kept weights removed (%)", ylabel="%",
          title="Removal attack strength", loc="lower left")


def _summary(report: dict[str, Any]) -> str:
    s, c = report["steps"], report["config"]
    t, v1, ver = s["ticket"], s["keymask"], s["verify"]
    lines = [
        "# hf-lottery demo", "",
        f"{c['arch']} on {c['dataset']} ({c['train_limit'] or 'all'} training / {c['test_limit'] or 'all'} test "
        f"images), preset `{c['preset']}`, device `{c['device']}`, seed {c['seed']}; {report['seconds']:.0f} s.", "",
        "## Owner", "",
        f"- IMP: dense {_pct(t['dense_accuracy'])} → ticket {_pct(t['ticket_accuracy'])} at "
        f"{t['density']:.2%} density ({len(t['rounds'])} runs, `imp_accuracy_vs_density.png`).",
        f"- Signed (V2, QR level {s['sign']['ecc']}, {s['sign']['copies']} copies, widths {s['sign']['widths']}): "
        f"{_pct(s['sign']['accuracy_before_retraining'])} before retraining, "
        f"{_pct(report['published_accuracy'])} after (trigger agreement "
        f"{_num(s['retrain'].get('trigger_agreement_after'))}).",
        f"- Key mask (V1, {v1['ratio']:.0%} of kept weights, omp): locked copy {_pct(v1['accuracy_locked'])}, "
        f"with the key {_pct(v1['accuracy_with_key'])}.",
        f"- Published: {s['publish'].get('repo_id') or s['publish'].get('folder')} ({s['publish']['mode']}); "
        f"card `README.md`, badge `ownership_badge.svg`.",
        f"- Verified: **{ver['verdict']}** — {ver['reason']}", "",
        *([f"- Anchored: {s['publish']['anchor']['repo_id']} @ {s['publish']['anchor']['commit'][:12]}, server date "
           f"{s['publish']['anchor']['date']} (the commit that published the model).", ""]
          if s["publish"].get("anchor") else ["- Not anchored (published to a folder): verdicts are unanchored "
                                             "checks.", ""]),
        "## Thief", "",
        "| attack | accuracy | change | verdict | V2 text | V2 bits | V3 agreement | V3 p |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in s["attacks"]:
        lines.append(f"| {r['attack']} | {_pct(r['accuracy'])} | {r['accuracy_change']:+.2f} | {r['verdict']} | "
                     f"{r['v2_text'] or '—'} | {_num(r['v2_bit_agreement'])} | {_num(r['v3_agreement'])} | "
                     f"{_num(r['v3_p_value'])} |")
    lines += ["", "Pruning sweep (`attack_strength.png`):", "",
              "| removed | accuracy | decoded | V2 bits | verdict |", "| --- | --- | --- | --- | --- |"]
    for r in s["prune_sweep"]:
        lines.append(f"| {r['fraction']:.0%} | {_pct(r['accuracy'])} | {'yes' if r['decoded'] else 'no'} | "
                     f"{_num(r['v2_bit_agreement'])} | {r['verdict']} |")
    lines += ["", f"**{'Owned before and after every attack.' if report['ok'] else 'Not every check said owned.'}**",
              ""]
    return "\n".join(lines)


def write_report(out: Path, report: dict[str, Any]) -> list[Path]:
    """Write ``report.json``, ``summary.md`` and the plots into ``out``; return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.json", out / "summary.md"]
    written[0].write_text(json.dumps(report, indent=2, default=str))
    written[1].write_text(_summary(report))
    _plot_imp(report["steps"]["ticket"]["rounds"], out / PLOTS[0])
    _plot_sweep(report["steps"]["prune_sweep"], out / PLOTS[1])
    written += [out / p for p in PLOTS]
    return written
