"""The README and the docs name only files that exist: links, and repository paths in code text.

A page that says `fedllm/mtls.py` after the module moved sends its reader nowhere; this test
fails instead, naming the page and the path.
"""

import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").rglob("*.md")])
# Top-level folders whose paths the text names; a path starts one, not inside another path.
TOP = ("fedllm", "superlink", "supernode", "bench", "docker", "k8s", "scripts", "certs", "tests")
REPO_PATH = re.compile(rf"(?<![\w./$~-])((?:{'|'.join((*TOP, 'docs'))})/[\w./-]*)")
# Files a make target writes (`make bench-privacy`), named in the text before they exist.
GENERATED = {"bench/privacy.json", "docs/privacy.png"}
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def code_text(text: str) -> Iterator[str]:
    """Every fenced block and inline code span of a Markdown page."""
    yield from (match.group(0) for match in FENCE.finditer(text))
    yield from (match.group(2) for match in CODE.finditer(FENCE.sub("", text)))


def repo_paths(text: str) -> set[str]:
    """Repository paths (`bench/quality.py`, `k8s/`) named in a page's code text."""
    return {
        match.group(1).rstrip(".") for code in code_text(text) for match in REPO_PATH.finditer(code)
    }


def links(text: str) -> set[str]:
    """Relative link targets of a page, outside code (no URLs, no same-page anchors)."""
    prose = CODE.sub("", FENCE.sub("", text))
    return {
        target
        for target in LINK.findall(prose)
        if not re.match(r"[a-z]+:", target) and not target.startswith("#")
    }


def slug(heading: str) -> str:
    """A heading's anchor as MkDocs and GitHub write it for these pages."""
    text = re.sub(r"[^\w\s-]", "", heading.replace("`", "").strip().lower())
    return re.sub(r"[-\s]+", "-", text).strip("-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings."""
    headings = re.findall(r"^#+\s+(.*?)\s*$", FENCE.sub("", page.read_text()), re.M)
    return {slug(heading) for heading in headings}


def missing(page: Path) -> list[str]:
    """What `page` names that does not exist, as `path` or `link -> reason`."""
    text = page.read_text()
    found = [
        path
        for path in sorted(repo_paths(text))
        if not (ROOT / path).exists() and path not in GENERATED
    ]
    for target in sorted(links(text)):
        file, _, anchor = target.partition("#")
        resolved = (page.parent / file).resolve()
        if not resolved.exists():
            found.append(f"{target} -> no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            found.append(f"{target} -> no such heading")
    return found


def test_pages_name_only_existing_paths() -> None:
    problems = {str(page.relative_to(ROOT)): found for page in PAGES if (found := missing(page))}
    assert problems == {}


def test_generated_paths_are_written_by_the_makefile() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert all(path in makefile for path in GENERATED)


def test_a_moved_module_and_a_broken_link_are_found(tmp_path: Path) -> None:
    (tmp_path / "running.md").write_text("# Running\n\n## When processes die\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\nSee `fedllm/mtls.py`, now `fedllm/flower_internals/mtls.py`, and `k8s/`.\n\n"
        "```bash\npython bench/nothing.py --out /app/certs/x.sh\n```\n\n"
        "[a](running.md#when-processes-die), [b](running.md#no-such-heading), [c](gone.md),\n"
        "[d](#page), [e](https://example.org), `[f](not-a-link.md)`\n"
    )
    assert missing(page) == [
        "bench/nothing.py",
        "fedllm/mtls.py",
        "gone.md -> no such file",
        "running.md#no-such-heading -> no such heading",
    ]


def test_slugs_match_mkdocs_anchors() -> None:
    assert slug("Containers: `docker compose up`") == "containers-docker-compose-up"
    assert slug("The site's policy") == "the-sites-policy"
    assert slug("On a GPU: bitsandbytes 4-bit vs bf16") == "on-a-gpu-bitsandbytes-4-bit-vs-bf16"
