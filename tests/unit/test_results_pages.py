"""benchmarks/_results.py: a results page goes to docs/results/<name>.md, and ``--docs-page`` names another page so
that a second machine's run is kept beside the first instead of replacing it; a name that is not a plain page name
(a path, upper case) is refused before anything is written."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from benchmarks import _results


def _parser(page: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    _results.add_docs_flag(parser, page=page)
    return parser


def test_docs_page_defaults_to_the_scripts_page_and_takes_another_name() -> None:
    assert _parser("deploy-cpu").parse_args([]).docs_page == "deploy-cpu"
    args = _parser("deploy-cpu").parse_args(["--write-docs", "--docs-page", "deploy-cpu-xeon-amx"])
    assert args.write_docs and args.docs_page == "deploy-cpu-xeon-amx"
    assert not hasattr(_parser(None).parse_args([]), "docs_page")  # only the scripts that pass their page offer it


def test_write_page_writes_the_named_page_with_command_and_machine(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_results, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr("sys.argv", ["benchmarks/deploy_cpu.py", "--write-docs", "--docs-page", "deploy-cpu-x"])
    path = _results.write_page("deploy-cpu-x", "Title", "| a |\n|---|\n| 1 |", "CPU X, ISA avx2")
    text = path.read_text()
    assert path == tmp_path / "deploy-cpu-x.md"
    assert text.startswith("# Title\n")
    assert "Command: `python benchmarks/deploy_cpu.py --write-docs --docs-page deploy-cpu-x`" in text
    assert "Machine: CPU X, ISA avx2" in text and "| 1 |" in text


@pytest.mark.parametrize("name", ["../README", "docs/x", "Deploy", "", "-x"])
def test_write_page_refuses_a_name_that_is_not_a_page(name: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_results, "RESULTS_DIR", tmp_path)
    with pytest.raises(SystemExit, match="is not a page name"):
        _results.write_page(name, "Title", "body", "machine")
    assert list(tmp_path.iterdir()) == []


def test_a_bad_docs_page_is_refused_when_the_run_starts(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _parser("deploy-cpu").parse_args(["--write-docs", "--docs-page", "../README"])
    assert exc.value.code == 2 and "is not a page name" in capsys.readouterr().err
