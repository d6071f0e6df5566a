"""Ablation sweeps, ``unigrpo-kit ablate``: a grid of recipe overrides x seeds, each cell a
resumable training run that is evaluated at its end, then one results table and two plots.

A sweep lives in ``work_dirs/ablate_<name>/``:

    <cell>/seed<k>/      one training run (runner.train's files: metrics.jsonl, checkpoints/, ...)
        run.json         the run's exact ``--cfg-options`` (written before the run starts)
        worker.log       the worker's output, one header per attempt, full tracebacks
        result.json      written atomically when the run is finished: eval scores, final training
                         reward, reward curve and times, or the one-line error of a failed run
    untrained_base/result.json   the recipe's model evaluated before any training: the
                         tables' first row (``--no-baseline`` leaves it out)
    results.csv, results.md, runs.csv, reward_curves.png, eval_strict.png

A finished run's ``.lock`` (the worker's guard against two sweeps training it at once) is
removed when the command ends, so a finished sweep folder holds only results.

A run is finished when its ``result.json`` exists. Running the same command again skips finished
runs, resumes the others from their last checkpoint (``runner.train(..., resume=True)``) and
rewrites the tables from the result files alone, so a killed-and-resumed sweep ends with the
same table as an uninterrupted one (up to the time columns). Seeds are not part of the default
name: ``--seeds 0,1,2`` after ``--seeds 0,1`` adds the third seed to the same sweep. A failed
run counts as finished; ``--retry-failed`` runs the failed ones again (resuming from their
checkpoints), e.g. after fixing the bug that made them fail.

Each run is a separate process (``python -m unigrpo_kit.sweep.worker``); ``--jobs N`` runs N at a
time with ``cpus // N`` torch threads each, unless the sweep sets ``threads=K`` itself.

Grid values are Python literals where they parse as one (``unigrpo_kit.recipe.parse_value``).
On the command line ``--grid key=v1,v2`` splits on the commas outside brackets and quotes, so
``--grid 'rollout.window.window_range=(0,5),(2,7)'`` is two tuples (quote it for the shell);
values with nested structure read better in a ``--grid-file`` (see ``recipes/ablations/``):

    grid = {"rollout.max_rounds": [1, 2]}              # cartesian product over the keys
    variants = [dict(name="no_reg", overrides={"algorithm.regularizers": []}), ...]
    seeds = [0, 1]
    base_overrides = {"schedule.steps": 40}            # applied to every run

``variants`` and ``grid`` may be combined (every variant x every grid cell); ``--grid`` keys add
to the file's grid. A dict value is merged into the recipe's dict (mmengine semantics) unless it
holds ``_delete_=True``, which replaces it.

The package, in the order a sweep uses it:

- :mod:`unigrpo_kit.sweep.command`: the typer command; plans the sweep, runs the workers, reports.
- :mod:`unigrpo_kit.sweep.plan`: grid parsing, grid files, cells, run folders, atomic writes.
- :mod:`unigrpo_kit.sweep.worker`: one run in its own process: train, evaluate, ``result.json``.
- :mod:`unigrpo_kit.sweep.base`: the untrained base row, evaluated once per sweep.
- :mod:`unigrpo_kit.sweep.report`: per-cell statistics, the tables and the two plots.

``python -m unigrpo_kit.sweep ...`` is the command without the rest of the CLI.
"""
