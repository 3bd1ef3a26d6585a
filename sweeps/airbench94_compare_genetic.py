"""The worked comparison's genetic search (benchmarks/sweep_comparison.py): the box of
airbench94_compare_grid.py as continuous ranges, for NSGA-II on the same trial budget.

    ./run.sh sweep records/airbench94.py --space sweeps/airbench94_compare_genetic.py --sampler genetic \\
        --population 4 --trials 12 --seeds 2 --smoke --config.model.width_mult=0.0625 \\
        --config.data.path=sample --report

docs/sweeps.md describes the format.
"""

from speedrun.sweep.space import loguniform, uniform

SPACE = {
    "optimizer.lr": loguniform(5.75, 23.0),
    "optimizer.weight_decay": loguniform(0.00765, 0.0306),
    "label_smoothing": uniform(0.0, 0.2),
}
