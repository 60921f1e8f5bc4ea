"""``qunlearn report``: one self-contained HTML page. It parses (every element closed, no
script, nothing fetched), names every results directory given, embeds every figure file that
``qunlearn plot`` makes (the same PNG bytes), carries the pass marks of the comparison, and
escapes free text from the manifest and the directory names."""

import base64
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from markupsafe import escape

from qunlearn import api
from qunlearn.cli import main
from qunlearn.compare import compare_results_dir
from qunlearn.plotting.results import plot_results_dir

INJECTED = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
VOID = {"meta", "img", "br", "hr", "link", "input", "source", "wbr", "col", "area", "base"}


class Page(HTMLParser):
    """The parts of the page the tests look at, and a check that every element is closed."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.tags = [], [], []
        self.sections, self.figures, self.marks = {}, {}, {}
        self.texts = []
        self._section = self._code = self._figure = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "section":
            self._section = attrs["id"]
            self.sections[self._section] = {"dir": None, "deviations": []}
            self.figures[self._section], self.marks[self._section] = {}, []
        if tag == "code" and "results-dir" in (attrs.get("class") or ""):
            self._code = []
        if tag == "figure":
            self._figure = attrs["data-figure"]
        if tag == "img" and self._section:
            self.figures[self._section][self._figure] = attrs["src"]
        if tag == "td" and attrs.get("class") in ("pass", "fail"):
            self.marks[self._section].append(attrs["class"])

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()
        if tag == "code" and self._code is not None:
            self.sections[self._section]["dir"] = "".join(self._code)
            self._code = None

    def handle_data(self, data):
        self.texts.append(data)
        if self._code is not None:
            self._code.append(data)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Two results directories: a small Fig 2c MLP sweep at the paper's settings (judged, so it
    has pass marks), and a copy of it under a name with markup, whose manifest has free text with
    markup in it (deviations are free text; config names cannot hold it). Then the report."""
    root = tmp_path_factory.mktemp("report")
    judged = root / "judged"
    overrides = ['noises=["label_flip"]', "alphas=[0.5]", "runs=2"]  # 1 cell, 2 metrics
    api.run("fig2c_mnist", out=judged, overrides=overrides, models=["mlp"], progress=False)
    odd = root / "<b>bold</b> & co"
    shutil.copytree(judged, odd)
    manifest = json.loads((odd / "manifest.json").read_text())
    manifest["deviations_from_reference"].append(INJECTED)
    (odd / "manifest.json").write_text(json.dumps(manifest))
    before = {d: sorted(p.name for p in d.iterdir()) for d in (judged, odd)}
    out = root / "page" / "report.html"
    assert main(["report", str(judged), str(odd), "--out", str(out)]) == 0
    assert {d: sorted(p.name for p in d.iterdir()) for d in (judged, odd)} == before
    text = out.read_text(encoding="utf-8")
    page = Page()
    page.feed(text)
    page.close()
    return {"dirs": [judged, odd], "html": text, "page": page, "root": root}


def test_the_page_parses_and_is_self_contained(report):
    page, html = report["page"], report["html"]
    assert not page.errors and page.stack == [], (page.errors, page.stack)
    assert page.tags[0] == "html" and "script" not in page.tags
    assert "http://" not in html and "https://" not in html  # nothing fetched
    srcs = [src for figs in page.figures.values() for src in figs.values()]
    assert srcs and all(src.startswith("data:image/png;base64,") for src in srcs)


def test_it_names_every_results_directory(report):
    named = [s["dir"] for s in report["page"].sections.values()]
    assert named == [str(d) for d in report["dirs"]]


def test_it_embeds_every_figure_file_that_plot_makes(report, tmp_path):
    sections = report["page"].figures.items()
    for (section, figures), results in zip(sections, report["dirs"], strict=True):
        made = plot_results_dir(results, tmp_path / section)
        pngs = {p.stem: p.read_bytes() for p in made if p.suffix == ".png"}
        assert {p.stem for p in made} == set(pngs) == set(figures)  # PNG and PDF per figure
        for stem, src in figures.items():
            assert base64.b64decode(src.split(",", 1)[1]) == pngs[stem]


def test_it_carries_the_pass_marks_of_the_comparison(report, tmp_path):
    judged = compare_results_dir(report["dirs"][0], tmp_path / "cmp")["table"]
    expected = ["pass" if r["pass"] else "fail" for r in judged if "pass" in r]
    assert len(expected) == 2
    assert report["page"].marks["results-0"] == expected


def test_free_text_is_escaped(report):
    html, page = report["html"], report["page"]
    assert INJECTED not in html and "<b>bold" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert INJECTED in page.texts  # shown as text, as written
    assert "b" not in page.tags and page.tags.count("img") == len(
        [s for figs in page.figures.values() for s in figs]
    )


def test_it_shows_what_was_run_and_the_wall_times(report):
    html = report["html"]
    manifest = json.loads((report["dirs"][0] / "manifest.json").read_text())
    assert manifest["git_revision"] in html and manifest["config_hash"] in html
    assert all(str(escape(d)) in html for d in manifest["deviations_from_reference"])
    assert f"Last run: {manifest['last_run']['seconds']:.3f} s" in html
    assert "&#34;experiment&#34;: &#34;noise_sweep&#34;" in html  # the config, as JSON text


def test_bad_input_is_one_line_and_writes_no_page(report, tmp_path, capsys):
    out = tmp_path / "r.html"
    for argv in (
        ["report", str(report["dirs"][0]), str(tmp_path / "missing"), "--out", str(out)],
        ["report", str(report["dirs"][0]), "--out", str(tmp_path / "r.txt")],
        ["report", str(tmp_path), "--out", str(out)],  # no manifest.json
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_template_ships_with_the_package():
    from importlib import resources

    assert (resources.files("qunlearn") / "templates" / "report.html.j2").is_file()
    assert (
        Path(__file__).parent.parent.joinpath("pyproject.toml").read_text().count("templates/*.j2")
    )
