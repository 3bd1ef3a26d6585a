"""The README's records table is benchmarks/records_table.py's output, and every figure it links
exists as a committed file that holds that figure (the GPU logs as printed)."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("records_table", ROOT / "benchmarks" / "records_table.py")
records_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(records_table)


def test_readme_table_is_the_scripts_output():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert records_table.replace(readme, records_table.table()) == readme, \
        "README's records table is stale — run: python benchmarks/records_table.py --write"


def test_every_record_has_a_row():
    rows = records_table.table().splitlines()[2:]
    assert sorted(re.match(r"\| \[([\w]+)\]", r).group(1) for r in rows) == \
        sorted(p.stem for p in (ROOT / "records").glob("*.py"))


def test_linked_gpu_figures_are_in_the_files_that_printed_them():
    for figure, path in re.findall(r"\[([\d.]+) s\]\((benchmarks/results/[^)]+)\)", records_table.table()):
        text = (ROOT / path).read_text(encoding="utf-8")
        assert figure in text, f"{figure} s is not in {path}"


def test_readme_links_resolve():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(((?!http)[^)#]+)(?:#[^)]*)?\)", readme):
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200
