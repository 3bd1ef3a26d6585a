"""Ranges for the genetic (NSGA-II) or TPE search over airbench94: accuracy against train time.

Width and epochs change the shapes (each distinct value compiles once), so train time is a real
second objective: the Pareto front trades accuracy for seconds.

    ./run.sh sweep records/airbench94.py --space sweeps/airbench94_genetic.py --sampler genetic \\
        --population 20 --trials 200 --seeds 3 --report

docs/sweeps.md describes the format.
"""

from speedrun.sweep.space import categorical, integer, loguniform, uniform

SPACE = {
    "optimizer.lr": loguniform(2.0, 50.0),
    "optimizer.weight_decay": loguniform(0.003, 0.06),
    "label_smoothing": uniform(0.0, 0.3),
    "model.width_mult": categorical(0.5, 0.75, 1.0),
    "epochs": integer(6, 12),
}
