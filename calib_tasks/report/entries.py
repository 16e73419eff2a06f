"""What can be reported for each task of each run, with a note for everything that cannot.

An entry is one calib task in one run, under one filter (the harness writes every document once
per filter; a task of several filters gets one entry per filter, named ``<task>, filter <f>``):
numbers recomputed from its samples file when it has usable records, else the numbers of its
results file. A multiple-choice task of a run made without this package gets one entry per
confidence rule of ``logged_choices.LOGGED_RULES``, named ``<task> [<rule>]`` and carrying its
``Rule``. A generative calib task's entry holds generation records (its numbers: the first
confidence method's, ``numbers``; every method's: ``methods.method_rows``). Groups, non-calib
tasks (a stock ``generate_until`` task among them: its samples log text, no log-probabilities)
and tasks with neither usable samples nor calib numbers are skipped with a note. Two things
make numbers from the samples untrustworthy, and both are marked on the entry and noted: fewer
(or more) usable samples than the results file counts (``n-samples`` -> task ->
``effective``), and scores that carry no information.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from calib_tasks.report.logged_choices import read_choice_records
from calib_tasks.report.notes import Notes
from calib_tasks.report.numbers import (
    TaskNumbers,
    pool_numbers,
    results_numbers,
    unknown_methods,
)
from calib_tasks.report.runs import (
    Run,
    is_calib_result,
    is_predict_only_result,
    result_filters,
)
from calib_tasks.report.samples import FilterSamples, TaskSamples, read_samples
from calib_tasks.scoring.confidence_rules import SUM, Rule
from calib_tasks.scoring.metric_table import EQUAL_MASS, EQUAL_WIDTH, MetricOptions
from calib_tasks.scoring.records import (
    GENERATION,
    HISTOGRAM,
    ONE_PREDICTION,
    PREDICT_ONLY_KEY,
    RECORD_KEY,
    Pool,
)

MAX_LISTED_PROBLEMS = 5
#: The harness's output type of generative tasks, whose stock samples log text, no scores.
GENERATE_UNTIL = "generate_until"
NO_INFORMATION = "the backend's scores carry no information"

#: How calib-report recomputes every number: the metric table's options (binning strategy,
#: number of bins, bootstrap seed; by default calib_metrics' own, those of the tasks' results
#: files).
ReportOptions = MetricOptions


def count_marker(found: int, expected: int) -> str | None:
    """``"INCOMPLETE: 5 of 20 samples"`` when fewer samples were usable than the results file
    counts, ``"INCONSISTENT: 40 samples, the results file counts 20"`` when more, else None."""
    if found < expected:
        return f"INCOMPLETE: {found} of {expected} samples"
    if found > expected:
        return f"INCONSISTENT: {found} samples, the results file counts {expected}"
    return None


@dataclass(frozen=True)
class Entry:
    """One calib task of one run, named ``task``: its numbers, the pool of its records (None
    for numbers from the results file), where they come from, and what the results file counts
    (``expected_documents``, None when it says nothing). ``rule`` is the confidence rule of an
    entry of a logged multiple-choice run (None for a calib task's records, which carry their
    rules). ``harness_task`` is the harness task whose records the entry holds, all of them
    (None for one filter of a task of several, and for a pooled group): what a group pools."""

    position: int
    run: Run
    label: str
    task: str
    numbers: TaskNumbers
    pool: Pool | None
    origin: str
    expected_documents: int | None = None
    rule: Rule | None = None
    harness_task: str | None = None

    @property
    def predictions(self) -> Pool | None:
        """The pool of the entry's records when each is one prediction (top-label or
        multiclass): what the breakdowns, the rule and recalibration tables and a group's pooling
        read; None for token histograms and for numbers from the results file."""
        return self.pool if self.pool is not None and self.pool.kind in ONE_PREDICTION else None

    @property
    def incomplete(self) -> str | None:
        """The ``count_marker`` of numbers from samples that do not cover the run, else None."""
        found, expected = self.numbers.documents, self.expected_documents
        if self.numbers.source != "samples" or found is None or expected is None:
            return None
        return count_marker(found, expected)

    @property
    def not_measured(self) -> str | None:
        """``"NOT MEASURED: <why> — the backend's scores carry no information"`` when the
        scores are uninformative (then the calibration errors measure nothing), else None."""
        reason = self.numbers.uninformative
        return f"NOT MEASURED: {reason} — {NO_INFORMATION}" if reason else None

    @property
    def alerts(self) -> list[str]:
        """Every marker of the entry (``incomplete``, ``not_measured``), for its reader."""
        return [m for m in (self.incomplete, self.not_measured) if m]


def _note_listed(problems: list[str], more: str, path: Path, notes: Notes, where: str) -> None:
    """Note the first ``MAX_LISTED_PROBLEMS`` of ``problems`` (lines of the file at ``path``)
    and how many more there are (``more`` says what they are)."""
    listed = problems[:MAX_LISTED_PROBLEMS]
    for problem in listed:
        notes.add(f"{where}: {problem}")
    if len(problems) > len(listed):
        notes.add(f"{where}: {len(problems) - len(listed)} {more} in {path} (not listed)")


def _note_problems(samples: TaskSamples, notes: Notes, where: str) -> None:
    """Note the unusable lines of ``samples`` and its lines left out of some numbers."""
    _note_listed(samples.problems, "more unusable lines", samples.path, notes, where)
    _note_listed(
        samples.left_out, "more lines left out of some numbers", samples.path, notes, where
    )


def _from_samples(
    samples: TaskSamples, pool: Pool, options: ReportOptions, notes: Notes, where: str
) -> TaskNumbers | None:
    """The numbers of ``pool`` (of records of ``samples``) with ``options``, equal-width bins
    for token histograms (noted when others were asked for); None, noted, when they cannot be
    computed."""
    if pool.kind == HISTOGRAM and options.binning == EQUAL_MASS:
        notes.add(
            f"{where}: equal-mass binning is not available for token histogram records; "
            "equal-width bins used"
        )
        options = replace(options, binning=EQUAL_WIDTH)
    try:
        return pool_numbers(pool, options)
    except ValueError as error:
        notes.add(f"{where}: cannot recompute the numbers from {samples.path} ({error})")
        return None


def _origin(of_filter: FilterSamples, several: bool) -> str:
    usable = of_filter.n_documents
    where = f"samples, filter {of_filter.key}" if several else "samples"
    if usable == of_filter.n_lines:
        return f"{where} ({usable} documents)"
    return f"{where} ({usable} of {of_filter.n_lines} lines usable)"


def _entry_name(task: str, filter_key: str, several: bool) -> str:
    return f"{task}, filter {filter_key}" if several else task


def logged_entry_name(task: str, rule: Rule) -> str:
    """The name of the entry of ``task`` under ``rule`` (a logged run's): ``<task> [<rule>]``."""
    return f"{task} [{rule.name}]"


def _note_brier_kind(pool: Pool, numbers: TaskNumbers, notes: Notes, where: str) -> None:
    """Say why the Brier score is top-label when some records carry option probabilities."""
    with_probs = int(pool.holders(SUM.field).sum())
    if numbers.brier_kind != "top-label" or not with_probs:
        return
    why = (
        f"only {with_probs} of {pool.n} records carry option probabilities ('probs')"
        if with_probs < pool.n
        else "the records' 'probs' do not all have the same number of options"
    )
    notes.add(f"{where}: Brier is top-label, not multiclass: {why}")


def _note_alerts(entry: Entry, path: Path, notes: Notes, where: str) -> None:
    """The problem line of each of the entry's markers, naming its files."""
    if entry.incomplete:
        expected, found = entry.expected_documents, entry.numbers.documents
        notes.add(
            f"{where}: {entry.incomplete} — {path} has {found} usable sample lines, "
            f"{entry.run.files.results_file} counts {expected} (n-samples, effective); "
            f"the numbers shown describe those {found} only"
        )
    if entry.not_measured:
        notes.add(
            f"{where}: NOT MEASURED: {entry.numbers.uninformative} in {path} — "
            f"{NO_INFORMATION}; the calibration errors shown (in parentheses) measure nothing"
        )


def _samples_entry(
    position: int,
    run: Run,
    label: str,
    task: str,
    samples: TaskSamples,
    of_filter: FilterSamples,
    several: bool,
    options: ReportOptions,
    notes: Notes,
) -> Entry | None:
    """The entry of one filter's usable records (None, noted, when they cannot be computed)."""
    name = _entry_name(task, of_filter.key, several)
    where = f"{name} ({label})"
    pool = Pool(of_filter.records, name)
    numbers = _from_samples(samples, pool, options, notes, where)
    if numbers is None:
        return None
    if pool.kind in ONE_PREDICTION:
        _note_brier_kind(pool, numbers, notes, where)
    if pool.kind == GENERATION and (unknown := unknown_methods(pool)):
        notes.add(
            f"{where}: the records name confidence method(s) {', '.join(unknown)} that this "
            "version of calib_tasks does not know; left out"
        )
    entry = Entry(
        position,
        run,
        label,
        name,
        numbers,
        pool,
        _origin(of_filter, several),
        run.n_samples.get(task),
        harness_task=None if several else task,
    )
    _note_alerts(entry, samples.path, notes, where)
    return entry


def _results_entries(
    position: int,
    run: Run,
    label: str,
    task: str,
    filters: list[str],
    several: bool,
    notes: Notes,
    why: str = "",
) -> list[Entry]:
    """Entries of ``task``'s results-file numbers under those of ``filters`` it reports (named
    by filter when ``several``), with a note saying so, led by ``why`` the samples do not serve
    when it is given. A ``--predict_only`` run's results file has nothing to report (noted)."""
    metrics = run.metrics.get(task, {})
    where = f"{task} ({label})"
    if is_predict_only_result(metrics):
        notes.add(
            f"{where}: a --predict_only run ({run.files.results_file} holds no numbers, only "
            f"{PREDICT_ONLY_KEY!r}) without usable samples; nothing to report"
        )
        return []
    reported = [f for f in filters if f in result_filters(metrics)]
    if not reported:
        return []
    lead = f"{why}; numbers" if why else "numbers"
    notes.add(f"{where}: {lead} from {run.files.results_file} only, no diagram or breakdown")
    return [
        Entry(
            position,
            run,
            label,
            _entry_name(task, key, several),
            results_numbers(metrics, run.n_samples.get(task), key),
            None,
            "results file only",
        )
        for key in reported
    ]


def task_entries(
    position: int, run: Run, label: str, task: str, options: ReportOptions, notes: Notes
) -> list[Entry]:
    """The entries of ``task`` in ``run``, one per filter (none, with a note, when there is
    nothing to report). A filter whose samples do not serve gets the results file's numbers."""
    where = f"{task} ({label})"
    metrics = run.metrics.get(task, {})
    samples_path = run.files.samples_files.get(task)
    if samples_path is None:
        if not is_calib_result(metrics) and not is_predict_only_result(metrics):
            notes.add(f"{where}: not a calib task (no ECE in the results file); skipped")
            return []
        filters = result_filters(metrics)
        why = "samples are missing (run without --log_samples?)"
        return _results_entries(position, run, label, task, filters, len(filters) > 1, notes, why)
    samples = read_samples(samples_path)
    if samples.kind is None and not samples.problems and not is_calib_result(metrics):
        output_type = run.configs.get(task, {}).get("output_type")
        if output_type == "multiple_choice":
            return _logged_choice_entries(position, run, label, task, samples_path, options, notes)
        kind = f"output_type {output_type}" if output_type else "no task config in the results file"
        why = "skipped"
        if output_type == GENERATE_UNTIL:
            why = (
                "skipped: its samples hold the generated text only, no log-probabilities were "
                f"logged (no calib record under {RECORD_KEY!r}), so there is no confidence to "
                "calibrate; to measure it, run it wrapped by "
                "calib_tasks.generation.CalibGenerationTask (a task YAML whose wraps: names it)"
            )
        notes.add(f"{where}: not a calib task and not multiple choice ({kind}); {why}")
        return []
    _note_problems(samples, notes, where)
    if not samples.n_documents:
        counted = run.n_samples.get(task)
        counts = f" (the results file counts {counted} samples)" if counted else ""
        notes.add(f"{where}: no usable calib record in {samples_path}{counts}")
        filters = result_filters(metrics)
        return _results_entries(position, run, label, task, filters, len(filters) > 1, notes)
    _note_unchecked_count(run, task, samples_path, notes, where)
    if is_predict_only_result(metrics):
        notes.add(
            f"{where}: a --predict_only run ({run.files.results_file} holds no calib numbers); "
            f"numbers recomputed from {samples_path}"
        )
    several = len(samples.filters) > 1
    entries = []
    for of_filter in samples.filters.values():
        entry = None
        why = f"no usable calib record of filter {of_filter.key!r} in {samples_path}"
        if of_filter.n_documents:
            entry = _samples_entry(
                position, run, label, task, samples, of_filter, several, options, notes
            )
            why = ""  # _samples_entry noted why it could not recompute the numbers
        if entry is not None:
            entries.append(entry)
        else:
            filters = [of_filter.key]
            entries += _results_entries(position, run, label, task, filters, several, notes, why)
    return entries


def _logged_choice_entries(
    position: int,
    run: Run,
    label: str,
    task: str,
    path: Path,
    options: ReportOptions,
    notes: Notes,
) -> list[Entry]:
    """Entries ``<task> [sum]`` and ``<task> [norm]`` (``logged_entry_name``) of a
    multiple-choice task of a run made without this package, from the option log-likelihoods
    its samples logged (``logged_choices``)."""
    where = f"{task} ({label})"
    logged = read_choice_records(path, run.configs.get(task, {}))
    _note_listed(logged.problems, "more lines left out", path, notes, where)
    if logged.multiple_input:
        notes.add(
            f"{where}: the options sit in the context (multiple_input): the length-normalised "
            "rule is not computable from the logged requests; the summed rule only"
        )
    entries = []
    for rule, records in logged.records.items():
        if not records:
            continue
        name = logged_entry_name(task, rule)
        pool = Pool(records, name)
        origin = f"logged option log-likelihoods, {rule.name} rule ({pool.n} documents)"
        entry = Entry(
            position,
            run,
            label,
            name,
            pool_numbers(pool, options),
            pool,
            origin,
            run.n_samples.get(task),
            rule=rule,
            harness_task=task,
        )
        _note_alerts(entry, path, notes, f"{name} ({label})")
        entries.append(entry)
    if entries:
        notes.add(
            f"{where}: not a calib task; calibration computed from the option log-likelihoods "
            f"logged in {path}"
        )
    return entries


def _note_unchecked_count(run: Run, task: str, path: Path, notes: Notes, where: str) -> None:
    """Say so when a readable results file does not count the task's samples."""
    if run.metrics and task not in run.n_samples:
        notes.add(
            f"{where}: {run.files.results_file} has no n-samples count for {task}; "
            f"cannot check that {path} holds all of the run's samples"
        )
