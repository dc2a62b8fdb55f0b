"""The documentation states what the committed runs measured, reads in minutes, and speaks of the
software only (its history is the changelog's)."""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import results_doc  # noqa: E402

# Words that narrate how the project was made rather than what it does.
HISTORY = re.compile(
    r"\b(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|"
    r"this|that|earlier|another|one) sessions?\b|this environment|(?:slower|faster|slow|noisy) "
    r"day|working period|previous release|previous default|\bissue \d+|\bmissed\b",
    re.IGNORECASE,
)


def product_files() -> list[Path]:
    """README, the documentation pages and every source, benchmark and script file (the
    changelog holds the history and is left out)."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for folder in ("src", "bench", "scripts", "examples"):
        files += [
            p
            for p in sorted((ROOT / folder).rglob("*"))
            if p.suffix in (".py", ".sh", ".md") and ".egg-info" not in str(p)
        ]
    return files


def test_readme_and_docs_figures_are_those_of_the_committed_runs():
    stale = [
        str(path.relative_to(ROOT))
        for path, text in results_doc.generated().items()
        if path.read_text() != text
    ]
    assert not stale, f"regenerate with: python scripts/results_doc.py ({', '.join(stale)})"


def test_readme_is_a_five_minute_read():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


@pytest.mark.parametrize("path", product_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_comment_or_string_narrates_the_project_s_making(path):
    found = [
        f"{n}: {line.strip()}"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if HISTORY.search(line)
    ]
    assert not found, "\n".join(found)


def test_the_history_check_finds_history():
    for text in ("measured in the eighth session", "on a slower day", "target (issue 11)"):
        assert HISTORY.search(text)
    assert not HISTORY.search('@pytest.fixture(scope="session")')
