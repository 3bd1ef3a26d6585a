"""The worked comparison's grid (benchmarks/sweep_comparison.py): 3 × 2 × 2 = 12 points of airbench94's
learning rate, weight decay and label smoothing (each a traced key: one compile for the sweep).

    ./run.sh sweep records/airbench94.py --space sweeps/airbench94_compare_grid.py --seeds 2 --smoke \\
        --config.model.width_mult=0.0625 --config.data.path=sample --report

docs/sweeps.md describes the format.
"""

from speedrun.sweep.space import grid

SPACE = {
    "optimizer.lr": grid(5.75, 11.5, 23.0),  # the record's 11.5 × 1/2, 1, 2
    "optimizer.weight_decay": grid(0.00765, 0.0306),  # the record's 0.0153 × 1/2, 2
    "label_smoothing": grid(0.0, 0.2),
}
