"""Self-contained HTML report of one Optuna study (``launch report``).

The page carries a header table (study name, trials by state, best value and params) and
Optuna's plotly figures: optimization history, hyperparameter importances, parallel
coordinates and, when trials reported any, intermediate values. plotly.js is inlined exactly
once, so the file opens offline and loads nothing from a CDN. A figure that cannot be made
from the trials at hand (too few, no varying parameter) is replaced by a note saying why.

optuna and plotly are imported inside the functions: ``launch --help`` must stay light.
"""

from __future__ import annotations

import html
import os
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psy_agents.errors import ConfigError, StorageError
from psy_agents.hpo.spec import REFIT_SUMMARY_ATTR

# A one-line error listing every study of a big campaign would be unreadable.
_MAX_LISTED_STUDIES = 20


@dataclass(frozen=True)
class Section:
    """One block of the page: a plotly figure, or a note saying why there is none."""

    title: str
    figure: Any | None
    note: str = ""


@dataclass(frozen=True)
class Summary:
    """The header table of the report."""

    name: str
    direction: str
    states: dict[str, int]
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any]
    # A finished refit's test figure with its interval and the baseline's (else "").
    result: str = ""


def load_study(storage: Any, name: str, *, storage_label: str):
    """The study ``name`` in ``storage`` (an Optuna storage object or URL).

    Args:
        storage_label: how to name the storage in messages (a masked URL, never a password).

    Raises:
        StorageError: no such study; the message lists the studies that do exist.
    """
    import optuna

    names = sorted(optuna.get_all_study_names(storage))
    if name not in names:
        if not names:
            fix = "the storage holds no studies yet; start a search with `launch hpo`"
        else:
            shown = ", ".join(names[:_MAX_LISTED_STUDIES])
            more = len(names) - _MAX_LISTED_STUDIES
            fix = f"existing studies: {shown}" + (f" (and {more} more)" if more > 0 else "")
        raise StorageError(f"no study named {name!r} in storage {storage_label}", fix)
    return optuna.load_study(study_name=name, storage=storage)


def summarize(study, trials: Sequence[Any]) -> Summary:
    """Counts by state and the best trial (None when no trial completed)."""
    states = Counter(t.state.name for t in trials)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    best = study.best_trial if complete else None
    return Summary(
        name=study.study_name,
        direction=study.direction.name.lower(),
        states=dict(sorted(states.items())),
        best_number=None if best is None else best.number,
        best_value=None if best is None else best.value,
        best_params={} if best is None else dict(best.params),
        result=str(study.user_attrs.get(REFIT_SUMMARY_ATTR, "")),
    )


def _varying_params(complete: Sequence[Any]) -> list[str]:
    """Parameters taking at least two distinct values over the complete trials."""
    seen: dict[str, set[str]] = {}
    for trial in complete:
        for key, value in trial.params.items():
            seen.setdefault(key, set()).add(repr(value))
    return sorted(k for k, values in seen.items() if len(values) > 1)


def _figure(title: str, make: Callable[[], Any]) -> Section:
    # Optuna warns (instead of failing) when importances rest on very few trials; that
    # caveat belongs on the page next to the figure, not on the terminal.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figure = make()
    notes = sorted({str(w.message) for w in caught if issubclass(w.category, UserWarning)})
    return Section(title, figure, " ".join(notes))


def build_sections(study, trials: Sequence[Any]) -> list[Section]:
    """The report's figures, in page order; a Section with a note where a plot is impossible."""
    from optuna import visualization as vis

    complete = [t for t in trials if t.state.name == "COMPLETE"]
    sections: list[Section] = []
    title = "Optimization history"
    if complete:
        sections.append(_figure(title, lambda: vis.plot_optimization_history(study)))
    else:
        sections.append(Section(title, None, "No complete trial yet: nothing to plot."))
    title = "Hyperparameter importances"
    if len(complete) < 2:
        sections.append(Section(title, None, f"Needs at least 2 complete trials; "
                                             f"the study has {len(complete)}."))
    elif not _varying_params(complete):
        sections.append(Section(title, None, "No parameter varies across the complete "
                                             "trials, so there is nothing to rank."))
    else:
        sections.append(_figure(title, lambda: vis.plot_param_importances(study)))
    title = "Parallel coordinates"
    if any(t.params for t in complete):
        sections.append(_figure(title, lambda: vis.plot_parallel_coordinate(study)))
    else:
        sections.append(Section(title, None, "Needs a complete trial with parameters."))
    if any(t.intermediate_values for t in trials):
        sections.append(_figure("Intermediate values (per epoch)",
                                lambda: vis.plot_intermediate_values(study)))
    return sections


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.75em; text-align: left; }
th { background: #f3f3f3; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5em 1em; }
"""


def _rows(pairs: Sequence[tuple[str, Any]]) -> str:
    return "\n".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                     for k, v in pairs)


def _header(summary: Summary, storage_label: str) -> str:
    best = "—" if summary.best_value is None else f"{summary.best_value:.6g}"
    if summary.best_number is not None:
        best += f" (trial {summary.best_number})"
    info = [("study", summary.name), ("storage", storage_label),
            ("direction", summary.direction), ("best value", best)]
    info += [(f"trials {state.lower()}", n) for state, n in summary.states.items()]
    info.append(("trials total", sum(summary.states.values())))
    if summary.result:
        info.append(("test result (refit)", summary.result))
    params = _rows(sorted(summary.best_params.items())) or "<tr><td>—</td></tr>"
    return (f"<h2>Summary</h2>\n<table id=\"summary\">\n{_rows(info)}\n</table>\n"
            f"<h2>Best parameters</h2>\n<table id=\"best-params\">\n{params}\n</table>")


def _section_html(section: Section) -> str:
    parts = [f"<h2>{html.escape(section.title)}</h2>"]
    if section.note:
        parts.append(f"<p class=\"note\">{html.escape(section.note)}</p>")
    if section.figure is not None:
        # plotly.js is inlined once in <head>; every figure only calls Plotly.newPlot.
        parts.append(section.figure.to_html(full_html=False, include_plotlyjs=False))
    return "\n".join(parts)


def render_html(summary: Summary, sections: Sequence[Section], *, storage_label: str) -> str:
    """The whole page as one string: no external scripts, styles or fonts."""
    from plotly.offline import get_plotlyjs

    title = html.escape(f"Study {summary.name}")
    body = "\n".join(_section_html(s) for s in sections)
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{title}</title>\n<style>{_STYLE}</style>\n"
            f"<script type=\"text/javascript\">{get_plotlyjs()}</script>\n</head>\n<body>\n"
            f"<h1>{title}</h1>\n{_header(summary, storage_label)}\n{body}\n</body>\n</html>\n")


def write_report(storage: Any, name: str, out: Path, *, storage_label: str) -> Summary:
    """Write the report of study ``name`` to ``out`` (atomically: a reader never sees half).

    Args:
        storage: an Optuna storage object or URL.
        storage_label: the storage as shown on the page and in messages; pass a masked URL.

    Raises:
        StorageError: no such study (the message lists the existing ones).
        ConfigError: the study is multi-objective, or ``out`` cannot be written.
    """
    study = load_study(storage, name, storage_label=storage_label)
    if len(study.directions) != 1:
        raise ConfigError(f"study {name!r} has {len(study.directions)} objectives",
                          "launch report supports single-objective studies only")
    trials = study.get_trials(deepcopy=False)
    summary = summarize(study, trials)
    page = render_html(summary, build_sections(study, trials), storage_label=storage_label)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(out)
    except OSError as exc:
        if tmp.exists():  # False (not an error) when the parent is not a directory
            tmp.unlink()
        raise ConfigError(f"cannot write the report to {out}: {exc.strerror or exc}",
                          "pass a writable file path to --out") from None
    return summary
