"""The documentation: the Sphinx build (warnings are errors), the generated results page and
the README's promises (its length, its headline numbers, no reference outside the repository)."""

import json
import os
import re
import subprocess
import sys

import sg_keras
from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import render_results  # noqa: E402

README = (REPO / "README.md").read_text(encoding="utf-8")


def test_sphinx_build_has_no_warnings(tmp_path):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(REPO / "docs"), str(tmp_path)], capture_output=True, text=True, env=environment,
        timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    reference = tmp_path / "api" / "generated"
    for name in sg_keras.__all__:   # a page for every public class and function
        obj = getattr(sg_keras, name)
        if not isinstance(obj, type(sg_keras)):
            page = (reference / f"sg_keras.{name}.html").read_text(encoding="utf-8")
            assert f"sg_keras.{name}" in page
    assert (tmp_path / "_images" / "speed.png").exists()   # the results' figures are included
    for page in tmp_path.rglob("*.html"):   # docstrings included: nothing points outside
        assert "DESIGN" not in page.read_text(encoding="utf-8"), page


def test_results_page_holds_the_records_numbers(tmp_path):
    """Every row of every record reaches the page, and the headline rows are the records'."""
    text = render_results.render()
    acceptance = json.loads((REPO / "bench" / "results" / "acceptance.json").read_text())
    cdni = next(row for row in acceptance["rows"] if row["mode"] == "cdni")
    assert f"| 3 epochs, cDNI: test accuracy % | {cdni['test acc. mean %']:.2f} |" in text
    for path in (REPO / "bench" / "results").glob("*.json"):
        record = json.loads(path.read_text())
        assert f"### {path.stem}\n" in text and record["command"] in text
        assert text.count("\n| ") >= len(record["rows"])
    for png in (REPO / "bench" / "results").glob("*.png"):
        assert f"(../bench/results/{png.name})" in text


def test_results_page_is_up_to_date():
    assert render_results.main(["--check"]) == 0, "run: python bench/render_results.py"


def test_readme_is_short_and_self_contained():
    assert len(README.splitlines()) <= 210
    for outside in ("DESIGN", "the issue"):
        assert outside not in README
    for path in [REPO / "bench" / "RESULTS.md", *REPO.joinpath("docs").rglob("*.md")]:
        if "generated" not in path.parts:
            text = path.read_text(encoding="utf-8")
            assert "DESIGN" not in text and "the issue" not in text, path


def test_readme_headline_numbers_come_from_the_results_page():
    """The README's results table quotes numbers; each is on the generated results page."""
    page = (REPO / "docs" / "results.md").read_text(encoding="utf-8")
    section = README.split("\n## Results", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    numbers = re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", table)
    assert numbers
    for number in numbers:
        assert number in page, number
