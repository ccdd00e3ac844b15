"""The documentation site: it builds in strict mode and the guide's code runs as written.

Each page of ``docs/guide/`` runs its ```` ```python ```` blocks in order, in one
fresh namespace, in a temporary directory holding a copy of
``examples/images/``. Pages other than Getting started first run its block
marked ``<!-- docs-prelude -->`` (the small model the guide uses). A block
preceded by ``<!-- no-test -->`` is not run. Where a top-level
``print(...)`` line ends in a comment, the comment must start with what it
printed (``print(x.shape)   # (4, 32, 32, 3)``): the documented output is
the real one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
GUIDE = DOCS / "guide"
PRELUDE_PAGE = GUIDE / "getting_started.md"

# A fence opening at the start of a line, its info string, its body, and the
# closing fence; the text just before it holds an optional marker comment.
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"<!--\s*(no-test|docs-prelude)\s*-->\s*$")
PRINT = re.compile(r"^print\(.*\)\s*(?:#\s*(?P<shown>.*))?$")


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    code: str
    marker: str | None


def code_blocks(path: Path) -> list[Block]:
    """The ```python blocks of a Markdown page, with the marker comment before each."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for m in FENCE.finditer(text):
        if m.group(1).strip() != "python":
            continue
        marker = MARKER.search(text[: m.start()].rstrip()[-60:])
        line = text.count("\n", 0, m.start()) + 1
        blocks.append(Block(path.name, line, m.group(2), marker.group(1) if marker else None))
    return blocks


def prelude() -> Block:
    found = [b for b in code_blocks(PRELUDE_PAGE) if b.marker == "docs-prelude"]
    assert len(found) == 1, "getting_started.md must mark exactly one block <!-- docs-prelude -->"
    return found[0]


def documented_output(block: Block) -> list[str | None]:
    """Per top-level ``print`` line of the block, the output its comment shows (or None)."""
    found = (PRINT.match(line) for line in block.code.splitlines())
    return [m.group("shown") for m in found if m]


def run_blocks(blocks: list[Block], cwd: Path) -> None:
    import contextlib
    import io

    import keras

    keras.backend.clear_session()
    shutil.copytree(ROOT / "examples" / "images", cwd / "examples" / "images")
    namespace: dict = {"__name__": "__docs__"}
    old = os.getcwd()
    os.chdir(cwd)
    try:
        for block in blocks:
            code = compile(block.code, f"docs/guide/{block.page}:{block.line}", "exec")
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(code, namespace)
            shown = documented_output(block)
            printed = out.getvalue().splitlines()
            if len(printed) != len(shown):
                continue  # prints in loops or multi-line output: nothing to compare line by line
            for got, want in zip(printed, shown):
                where = f"docs/guide/{block.page}:{block.line}"
                assert want is None or want.startswith(got.strip()), (
                    f"{where}: printed {got.strip()!r}, the page says {want!r}"
                )
    finally:
        os.chdir(old)


GUIDE_PAGES = sorted(GUIDE.glob("*.md"))


def test_guide_pages_exist():
    assert PRELUDE_PAGE in GUIDE_PAGES


@pytest.mark.parametrize("page", GUIDE_PAGES, ids=[p.stem for p in GUIDE_PAGES])
def test_guide_code_runs(page: Path, tmp_path):
    blocks = [b for b in code_blocks(page) if b.marker != "no-test"]
    if not blocks:
        return  # nothing to run on this page (shell commands and prose only)
    if page != PRELUDE_PAGE:
        blocks = [prelude(), *blocks]
    run_blocks(blocks, tmp_path)


def test_readme_quick_start_commands_are_the_guides():
    # The README's two commands are the ones Getting started explains (and .ci/run runs).
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    guide = PRELUDE_PAGE.read_text(encoding="utf-8")
    commands = [line for line in readme.splitlines() if "python3 -m venv .venv" in line]
    assert len(commands) == 2, commands
    for command in commands:
        assert command in guide


def test_site_builds_strict(tmp_path):
    # Strict: a broken link or anchor, a page left out of the nav, or a
    # docstring reference to a name that no longer exists fails the build.
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    problems = [line for line in proc.stderr.splitlines() if not line.startswith("INFO")]
    assert proc.returncode == 0, "\n".join(problems)[-5000:]
    assert (tmp_path / "site" / "api" / "logger" / "index.html").exists()
    assert (tmp_path / "site" / "guide" / "getting_started" / "index.html").exists()


def test_api_reference_covers_the_public_names():
    # A name added to tb_activations' exports needs a place in the API reference.
    import tb_activations

    pages = "".join(p.read_text(encoding="utf-8") for p in (DOCS / "api").glob("*.md"))
    missing = [
        name
        for name, module in tb_activations._EXPORTS.items()
        if f"::: {module}.{name}" not in pages and f"::: {module}\n" not in pages
    ]
    assert not missing, f"add to docs/api/*.md: {missing}"
    index = (DOCS / "api" / "index.md").read_text(encoding="utf-8")
    unlisted = [name for name in tb_activations._EXPORTS if f"    {name},  # " not in index]
    assert not unlisted, f"list in docs/api/index.md: {unlisted}"


def test_griffe_extension_renders_keras_examples_and_sphinx_roles():
    import importlib.util

    spec = importlib.util.spec_from_file_location("griffe_examples", DOCS / "griffe_examples.py")
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    keras_style = "Sum.\n\nExample:\n\n>>> f(1)\n2\n\nMore text."
    assert (
        ext.indent_examples(keras_style) == "Sum.\n\nExamples:\n    >>> f(1)\n    2\n\nMore text."
    )
    prose = "Example:\n\nSome prose."  # an admonition, left alone
    assert ext.indent_examples(prose) == prose
    roles = "See :class:`~tb_activations.Probes` and :func:`grid_shape`."
    assert ext.plain_roles(roles) == "See `Probes` and `grid_shape`."


def test_readme_links_resolve():
    # The README is not part of the site: its relative links are checked here.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if "://" not in t]
    assert local, "the README links to the documentation pages"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_every_written_tag_is_in_the_tags_page(tmp_path):
    # A logger with every feature on (drift with a pinned reference, predictions,
    # attribution, histograms, examples, feature visualization) on a tiny
    # classifier: each tag it writes, with the layer as `L` and the attribution
    # method as `M`, is a row of docs/guide/tags.md.
    import keras
    import numpy as np

    from tb_activations import ActivationLogger, Probes
    from tb_activations.metadata import ATTRIBUTION_PREFIX
    from tests.conftest import read_run

    keras.backend.clear_session()
    x = np.random.default_rng(0).integers(0, 256, size=(8, 16, 16, 3), dtype=np.uint8)
    layers = ["conv1", "conv2"]
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(4, 3, activation="relu", name=layers[0]),
            keras.layers.Conv2D(4, 3, activation="sigmoid", name=layers[1]),  # saturation
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    methods = ["gradcam", "saliency"]
    probes = Probes(x, labels=[0, 1, 2, 0, 1, 2, 0, 1])
    with ActivationLogger(
        model, probes, tmp_path, attribution=methods, examples_pool=x, examples_k=2
    ) as logger:
        logger.log(0)
        logger.pin_reference()
        logger.log(1)
        logger.log_examples(1)
        logger.log_examples(2)
        logger.log_feature_vis(2, channels=1, steps=2)
    acc = read_run(tmp_path / "activations")
    written = {tag for tags in acc.Tags().values() if isinstance(tags, list) for tag in tags}
    generic = set()
    for tag in written:
        head, _, rest = tag.partition("/")
        if head in layers:
            tag = f"L/{rest}"
        elif head == ATTRIBUTION_PREFIX:
            tag = f"{head}/M/{rest.partition('/')[2]}"
        generic.add(tag)
    page = (GUIDE / "tags.md").read_text(encoding="utf-8")
    missing = sorted(tag for tag in generic if f"`{tag}`" not in page)
    assert not missing, f"tags written but not in docs/guide/tags.md: {missing}"
    assert {"L/mosaic", "L/histogram", "attribution/M/maps", "L/examples_new_fraction"} <= generic


def test_api_reference_covers_the_attribution_names():
    # Rendered one by one: a package member named like its submodule (grad_cam)
    # would otherwise resolve to the submodule and be left out.
    from tb_activations import attribution

    page = (DOCS / "api" / "attribution.md").read_text(encoding="utf-8")
    rendered = set(re.findall(r"^::: tb_activations\.attribution\.\w+\.(\w+)$", page, re.M))
    assert set(attribution.__all__) <= rendered, set(attribution.__all__) - rendered
