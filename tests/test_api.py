"""The Python API (speedrun.fit / speedrun.predict): the README's example, run as it is written,
and predict's logits against the evaluation the training run reported (an independent path: the
compiled test-set evaluation of speedrun.evaluate.make_evaluate inside the experiment)."""

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    block = re.search(r"## Python API\n.*?```python\n(.*?)```", text, re.S)
    assert block, "README has no '## Python API' section with a python block"
    return block.group(1)


@pytest.fixture(scope="module")
def example():
    namespace = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    return namespace


@pytest.mark.slow  # a real training run: CI's slow pass
def test_readme_example_runs_and_returns_variables_history_and_timing(example):
    result = example["result"]
    assert set(result.variables) == {"params", "batch_stats", "constants"}
    assert len(result.history) == result.config.epochs
    assert result.metrics["train_time_s"] > 0 and 0 <= result.metrics["tta_acc"] <= 1
    assert "history" not in result.metrics


@pytest.mark.slow  # a real training run: CI's slow pass
def test_predict_agrees_with_the_runs_own_evaluation(example, sample):
    import speedrun

    result, (_, _, x_test, y_test) = example["result"], sample
    logits = speedrun.predict(result, x_test, tta_level=0)
    assert logits.shape == (len(x_test), 10) and logits.dtype == np.float32
    # the same model, the same images: the accuracy the run reported (its own compiled evaluation)
    assert np.mean(logits.argmax(-1) == y_test) == pytest.approx(result.metrics["acc"], abs=1.5 / len(y_test))
    tta = speedrun.predict(result, x_test[:7])  # the record's TTA level, a partial batch
    assert tta.shape == (7, 10)
    with pytest.raises(ValueError, match="uint8"):
        speedrun.predict(result, x_test.astype(np.float32))
