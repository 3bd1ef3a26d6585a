"""The project rule for records/: pinned recipes only, under 80 lines each; the docstring gives the
exact commands, the expected result and a pointer to the record's section of docs/records.md (where
the long explanations live); a derived record starts from its base record's config.

References: the rule as README's "Layout" states it; GitHub's heading anchors (lower case, spaces to
``-``, punctuation other than ``-`` and ``_`` dropped) for the ``docs/records.md#NAME`` pointers.
"""

import ast
import re
import runpy
from pathlib import Path

import pytest

from speedrun import config

ROOT = Path(__file__).resolve().parents[1]
RECORDS = sorted((ROOT / "records").glob("*.py"))
DOCS = ROOT / "docs" / "records.md"
MAX_LINES = 80  # every record strictly below
DERIVED = {"airbench94_muon": "airbench94", "resnet20_stacked": "resnet20_he2015", "airbench95": "airbench94",
           "airbench96": "airbench94", "airbench96_faster": "airbench96", "hiverge94": "airbench94_muon",
           "e1_curriculum94": "hiverge94"}  # record: its base


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the markdown headings (outside fenced code blocks)."""
    out, fenced = set(), False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)):
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return out


def _ids(paths):
    return [p.stem for p in paths]


def test_the_records_are_the_known_ones():
    assert {p.stem for p in RECORDS} >= {"94pct_26s", "airbench94", *DERIVED, *DERIVED.values()}


@pytest.mark.parametrize("path", RECORDS, ids=_ids(RECORDS))
def test_record_is_under_80_lines(path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n < MAX_LINES, f"{path.name}: {n} lines; move explanations to docs/records.md#{path.stem}"


@pytest.mark.parametrize("path", RECORDS, ids=_ids(RECORDS))
def test_docstring_has_the_commands_and_a_docs_pointer_that_resolves(path):
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert doc, f"{path.name} has no module docstring"
    assert f"./run.sh records/{path.name}" in doc
    assert f"./run.sh records/{path.name} --config.data.path=sample" in doc
    pointers = re.findall(r"docs/records\.md#([\w\-]+)", doc)
    assert pointers == [path.stem], f"{path.name}: expected one pointer docs/records.md#{path.stem}"
    assert path.stem in _anchors(DOCS.read_text(encoding="utf-8")), f"no '## {path.stem}' in docs/records.md"


def test_anchors_follow_github_rules():
    assert _anchors("# Title\n## 94pct_26s\n```\n# not a heading\n```\n### A b, c!\n") == {
        "title", "94pct_26s", "a-b-c"}


@pytest.mark.parametrize("path", RECORDS, ids=_ids(RECORDS))
def test_get_config_names_the_file(path):
    assert runpy.run_path(str(path))["get_config"]().name == path.stem
    assert config.load_record(path.stem).name == path.stem


def _assigned(path: Path) -> set[str]:
    """Dotted keys that ``get_config`` of the record file assigns (``c.model.preact = ...`` ->
    ``model.preact``; ``c.optimizer = ...`` -> ``optimizer``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        for target in node.targets if isinstance(node, ast.Assign) else ():
            parts = []
            while isinstance(target, ast.Attribute):
                parts.insert(0, target.attr)
                target = target.value
            if isinstance(target, ast.Name) and target.id == "c" and parts:
                out.add(".".join(parts))
    return out


@pytest.mark.parametrize("name, base", sorted(DERIVED.items()))
def test_derived_record_starts_from_its_base(name, base, monkeypatch):
    loaded = []
    real = config.load_record

    def spy(name_or_path, *args, **kwargs):
        loaded.append(Path(name_or_path).stem)
        return real(name_or_path, *args, **kwargs)

    monkeypatch.setattr(config, "load_record", spy)  # the record imports it when run
    derived = runpy.run_path(str(ROOT / "records" / f"{name}.py"))["get_config"]()
    monkeypatch.undo()
    assert loaded[0] == base  # the record's own base first (a derived base then loads its own)
    base_cfg, assigned = real(base), _assigned(ROOT / "records" / f"{name}.py")
    for key in config.keys(base_cfg):  # every base field the record does not reassign is the base's
        if not any(key == a or key.startswith(a + ".") for a in assigned):
            assert config.get(derived, key) == config.get(base_cfg, key), key
