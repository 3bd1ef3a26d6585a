"""airbench94_muon's learning rates: Muon's for the filters, SGD's for the head and the biases.

    ./run.sh sweep records/airbench94_muon.py --space sweeps/airbench94_muon_lr.py --sampler grid --seeds 3
    ./run.sh sweep records/airbench94_muon.py --space sweeps/airbench94_muon_lr.py --sampler tpe --trials 24

docs/sweeps.md describes the format.
"""

from speedrun.sweep.space import grid, loguniform

SPACE = {
    "optimizer.muon_lr": loguniform(0.12, 0.48, points=3),  # the record's 0.24 × 1/2, 1, 2
    "optimizer.head_lr": grid(0.335, 0.67, 1.34),
    "optimizer.bias_lr": grid(0.053),
}
