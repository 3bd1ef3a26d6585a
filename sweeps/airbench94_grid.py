"""A brute-force grid over airbench94's optimizer and regularisation (3 × 3 × 2 = 18 points).

    ./run.sh sweep records/airbench94.py --space sweeps/airbench94_grid.py --seeds 3 --report

docs/sweeps.md describes the format.
"""

from speedrun.sweep.space import grid

SPACE = {
    "optimizer.lr": grid(5.75, 11.5, 23.0),
    "optimizer.weight_decay": grid(0.0076, 0.0153, 0.0306),
    "label_smoothing": grid(0.1, 0.2),
}
