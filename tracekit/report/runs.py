"""The pages across runs: `tracekit diff --format html` (both timelines aligned, the makespan
change as a waterfall by engine and by layer, the stall causes that moved, new and resolved
findings) and nightly's index.html with the regressions' diff pages. The numbers are those of
`analysis.diff` and the nightly history, as their JSON reports give them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from tracekit import api, progress
from tracekit.analysis.figures import accounts
from tracekit.cli import render
from tracekit.report.lanes import MAX_BARS, engine_lanes
from tracekit.report.pages import TOP_STALL_CAUSES, Figure, Kind, Page, command, head_of
from tracekit.trace.names import shortened_column, shortened_names


# --- a diff -------------------------------------------------------------------------------------


def diff_page(base: api.TraceLike, cand: api.TraceLike, machine: api.MachineLike = None, *,
              timeline: str = "auto", threshold_pct: float = 2.0, force: bool = False,
              max_bars: int = MAX_BARS, machine_arg: str | None = None) -> tuple[Page, Any]:
    """Two runs compared (`tracekit diff --format html`): the page, and the `Diff`."""
    from tracekit.analysis.diff import check_comparable, diff, profile
    from tracekit.analysis.timelines import choose_source

    resolved = api.machine_of(machine)
    traces = api.trace_of(base), api.trace_of(cand)
    check_comparable(*traces, force=force)
    source = choose_source(*traces, choice=api.timeline_of(timeline))
    with progress.step("profiling both runs", total=2) as done:
        profiles = []
        for t in traces:
            profiles.append(profile(t, resolved, source))
            done.advance()
    d = diff(*profiles, threshold_pct=threshold_pct, force=force)
    facts, _ = render.diff_sections(d, render.timeline_facts(traces[0], resolved,
                                                             source.value))
    cli = command("tracekit", "diff", str(traces[0].path), str(traces[1].path),
                  *(("--machine", machine_arg) if machine_arg else ()),
                  "--timeline", source.value, "--threshold", f"{threshold_pct:g}",
                  "--force" if force else None, "-f", "json")
    sides = []
    for p in profiles:
        t = p.instructions
        acc = accounts(t)
        steps = p.critical.steps.select("start", "end", "engine")
        lo, hi = int(t["start"].min()), int(t["end"].max())  # type: ignore[arg-type]
        sides.append(engine_lanes(t, acc, steps, lo, hi, max_bars // 2))
    figures = [
        Figure("timelines", "Both timelines, aligned at their start", cli, Kind.TIMELINE,
               note="Each engine's lane in the base run (upper) and the candidate (lower), "
                    "from each run's first start; the critical paths in red."
                    + ("" if not any(s.binned for s in sides) else
                       f" Past {max_bars // 2:,} instructions a run is drawn as busy cycles "
                       f"per bin."), lanes=(sides[0], sides[1])),
        _waterfall("waterfall-engine", "Makespan change by engine (critical path)", d,
                   d.attribution_engine, "engine", cli),
        _waterfall("waterfall-layer", "Makespan change by layer (critical path)", d,
                   d.attribution_layer, "layer", cli),
        _stall_moves(d.stall_causes, cli),
        Figure("new-findings", "New findings", cli, Kind.TABLE, {
            "columns": [("severity", ""), ("code", ""), ("message", "")],
            "rows": render.records(d.new_findings)},
            note="In the candidate, not in the base (numbers masked, instructions aligned)."),
        Figure("resolved-findings", "Resolved findings", cli, Kind.TABLE, {
            "columns": [("severity", ""), ("code", ""), ("message", "")],
            "rows": render.records(d.resolved_findings)},
            note="In the base, no longer in the candidate."),
    ]
    return Page(f"tracekit diff: {d.workload}", head_of(facts), [render.diff_verdict(d)],
                figures), d


def _waterfall(key: str, title: str, d: Any, frame: pl.DataFrame, group: str,
               cli: str) -> Figure:
    """The base makespan, each group's change along the critical paths, the candidate's."""
    names = shortened_column(frame[group]).to_list()
    deltas = frame["delta"].to_list()
    return Figure(key, title, cli, Kind.PLOTLY, {
        "data": [{"type": "waterfall", "orientation": "v",
                  "measure": ["absolute", *(["relative"] * len(deltas)), "total"],
                  "x": ["base", *names, "candidate"],
                  "y": [d.base_makespan, *deltas, d.cand_makespan],
                  "connector": {"line": {"width": 1, "color": "#888888"}},
                  "increasing": {"marker": {"color": "#d62728"}},
                  "decreasing": {"marker": {"color": "#2ca02c"}},
                  "totals": {"marker": {"color": "#1f77b4"}},
                  "hovertemplate": "%{x}: %{y:+,} cycles<extra></extra>"}],
        "layout": {"yaxis": {"title": {"text": "makespan (cycles)"}}, "showlegend": False}},
        note=f"The change ({d.delta:+,} cycles) split by {group} between the two critical "
             f"paths' compositions; the steps add up to it.")


def _stall_moves(causes: pl.DataFrame, cli: str) -> Figure:
    top = causes.head(TOP_STALL_CAUSES)
    labels = [f"{e} waiting on {c}" for e, c in
              shortened_names(top.select("engine", "cause")).iter_rows()]
    deltas = top["delta"].to_list()
    return Figure("stall-causes", "Stall causes that moved", cli, Kind.PLOTLY, {
        "data": [{"type": "bar", "orientation": "h", "y": labels, "x": deltas,
                  "customdata": list(zip(top["base"].to_list(), top["cand"].to_list(),
                                         strict=True)),
                  "marker": {"color": ["#d62728" if v > 0 else "#2ca02c" for v in deltas]},
                  "hovertemplate": "%{y}: %{x:+,} cycles (%{customdata[0]:,} -> "
                                   "%{customdata[1]:,})<extra></extra>"}],
        "layout": {"yaxis": {"autorange": "reversed"},
                   "xaxis": {"title": {"text": "change of waiting cycles"}}}},
        note=f"The {top.height} largest of {causes.height} changes of waiting cycles by engine "
             f"and cause.")


# --- a nightly run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffLink:
    """A regressed workload's diff page (`file`, beside the index), or why there is none."""

    workload: str
    file: str | None
    why: str | None = None


def nightly_page(run: Any, links: dict[str, DiffLink]) -> Page:
    """The nightly index (`index.html`): per workload, its makespan in every run of the suite
    in the history, regressions marked, and this run's table with links to the diff pages."""
    from tracekit.analysis.history import History, workload_trend

    rows = run.rows
    first = rows.row(0, named=True)
    every = pl.concat([run.before, rows])
    held = History(run.history, every)
    figures = []
    for w in rows["workload"].to_list():
        t = workload_trend(held, w, run.suite.name)
        bad = t.filter(pl.col("status") == "regression")
        link = links.get(w)
        figures.append(Figure(
            f"trend-{len(figures)}", f"{w}: makespan over the history",
            command("tracekit", "history", str(run.history), "--workload", w, "--suite",
                    run.suite.name, "-f", "json"), Kind.PLOTLY, {
                "data": [{"type": "scatter", "mode": "lines+markers", "name": "makespan",
                          "x": t["run_id"].to_list(), "y": t["makespan"].to_list(),
                          "customdata": t["status"].to_list(),
                          "hovertemplate": "run %{x}: %{y:,} cycles (%{customdata})"
                                           "<extra></extra>"},
                         {"type": "scatter", "mode": "markers", "name": "regression",
                          "x": bad["run_id"].to_list(), "y": bad["makespan"].to_list(),
                          "marker": {"color": "#d62728", "size": 11, "symbol": "x"},
                          "hovertemplate": "run %{x}: regression<extra></extra>"}],
                "layout": {"height": 260, "xaxis": {"type": "category"},
                           "yaxis": {"title": {"text": "cycles"}, "rangemode": "tozero"}}},
            note=(f"diff page: {link.file}" if link and link.file else
                  f"no diff page: {link.why}" if link else "")))
    table = rows.select(
        "workload", "status", "timeline", "makespan", "baseline_makespan",
        pl.col("delta_pct"), "threshold_pct", "errors", "warnings", "baseline_run")
    diff_files = [links[w].file if w in links else None for w in table["workload"]]
    table = table.with_columns(pl.Series("diff", diff_files, dtype=pl.String))
    counts = {s: rows.filter(pl.col("status") == s).height
              for s in ("pass", "regression", "error")}
    head = [("suite", run.suite.name), ("run", f"{first['run_id']} ({first['date']})"),
            ("machine", f"{run.suite.machine or 'trn-like'} (makespans in its cycles)"),
            ("history", str(run.history))]
    verdict = [f"{rows.height} workload(s): {counts['pass']} passed, "
               f"{counts['regression']} regressed, {counts['error']} failed"]
    summary = Figure("runs", "This run", command("tracekit", "history", str(run.history),
                                                 "--suite", run.suite.name, "-f", "json")
                     + " --workload NAME (each row's last run)", Kind.TABLE, {
        "columns": [("workload", ""), ("status", ""), ("timeline", ""), ("makespan", ","),
                    ("baseline_makespan", ","), ("delta_pct", "+.2f"), ("threshold_pct", "g"),
                    ("errors", ","), ("warnings", ","), ("baseline_run", ""),
                    ("diff", "link")],
        "rows": render.records(table)},
        note="summary.md beside this page says what moved in each regression.")
    return Page(f"tracekit nightly: {run.suite.name}", head, verdict, [summary, *figures],
                links=[(f"diff of {w}", link.file) for w, link in links.items() if link.file])


def diff_file_name(workload: str) -> str:
    """The diff page of a workload: diff-NAME.html, NAME made safe for a file name."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in workload)
    return f"diff-{safe}.html"


def regressed_diffs(run: Any) -> dict[str, tuple[Path, Path] | str]:
    """For each regressed workload with a baseline run: (baseline trace, this run's trace)
    when the baseline's trace is still where the history says, with the same manifest
    sha256; else why not."""
    from tracekit.trace.bundle import file_sha256
    from tracekit.trace.schema import MANIFEST_FILE

    out: dict[str, tuple[Path, Path] | str] = {}
    mine = run.rows.filter((pl.col("status") == "regression")
                           & pl.col("baseline_run").is_not_null())
    for row in mine.iter_rows(named=True):
        base = run.before.filter((pl.col("suite") == row["suite"])
                                 & (pl.col("workload") == row["workload"])
                                 & (pl.col("run_id") == row["baseline_run"])).row(0, named=True)
        where = Path(base["trace"] or "")
        manifest = where / MANIFEST_FILE
        if not manifest.is_file():
            out[row["workload"]] = (f"the baseline run {base['run_id']}'s trace is no longer "
                                    f"at {where}")
        elif base["trace_sha256"] and file_sha256(manifest) != base["trace_sha256"]:
            out[row["workload"]] = (f"{where} no longer holds the baseline run "
                                    f"{base['run_id']}'s trace (its manifest's sha256 differs)")
        else:
            out[row["workload"]] = (where, Path(row["trace"]))
    return out


def nightly_pages(run: Any, machine_arg: str | None = None) -> dict[str, Page]:
    """The pages nightly writes beside summary.md: index.html, and diff-NAME.html for each
    regressed workload whose baseline trace is still at hand."""
    from tracekit.errors import TracekitError

    pages: dict[str, Page] = {}
    links: dict[str, DiffLink] = {}
    thresholds = dict(run.rows.select("workload", "threshold_pct").iter_rows())
    for workload, found in regressed_diffs(run).items():
        if isinstance(found, str):
            links[workload] = DiffLink(workload, None, found)
            continue
        name = diff_file_name(workload)
        try:
            page, _ = diff_page(*found, run.suite.machine, force=True,
                                threshold_pct=thresholds[workload],
                                machine_arg=machine_arg or run.suite.machine)
        except TracekitError as exc:
            links[workload] = DiffLink(workload, None, f"the diff could not be made: {exc}")
            continue
        pages[name] = page
        links[workload] = DiffLink(workload, name)
    return {"index.html": nightly_page(run, links), **pages}
