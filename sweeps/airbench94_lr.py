"""airbench94's learning rate (it scales the whole triangle schedule) and label smoothing.

    ./run.sh sweep records/airbench94.py --space sweeps/airbench94_lr.py --sampler grid --seeds 3
    ./run.sh sweep records/airbench94.py --space sweeps/airbench94_lr.py --sampler tpe --trials 20

docs/sweeps.md describes the format.
"""

from speedrun.sweep.space import grid, loguniform

SPACE = {
    "optimizer.lr": loguniform(2.875, 46.0, points=5),  # 11.5 × 1/4 ... 4, geometric
    "label_smoothing": grid(0.0, 0.1, 0.2, 0.3),
}
