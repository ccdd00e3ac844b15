"""Griffe extension: the docstrings' reST habits, rendered as Markdown by mkdocstrings.

- Keras writes ``Example:``, a blank line, then ``>>>`` lines at the
  section's own indentation. Griffe's Google parser reads that as an
  admonition holding Markdown, where ``>>>`` becomes a triple blockquote.
  Such a block becomes the indented ``Examples:`` section that the parser
  turns into code, so both styles render.
- Sphinx roles (``:class:`~tb_activations.Probes```, ``:func:`grid_shape```)
  would show their role name; they become code spans (``Probes``), the
  ``~`` form showing the last component, as Sphinx does.

Loaded by mkdocs.yml (mkdocstrings' ``extensions`` option).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_HEADER = re.compile(r"^(?P<indent>\s*)Examples?:\s*$")
_ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|obj|exc):`(?P<tilde>~?)(?P<target>[^`]+)`")


def _role_to_code(m: re.Match[str]) -> str:
    target = m["target"]
    return f"`{target.rsplit('.', 1)[-1] if m['tilde'] else target}`"


def plain_roles(text: str) -> str:
    """``:class:`~a.b.C``` -> ```C```, ``:func:`f``` -> ```f```."""
    return _ROLE.sub(_role_to_code, text)


def indent_examples(text: str) -> str:
    """``Example:`` + blank line + unindented ``>>>`` block -> indented ``Examples:`` section."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = _HEADER.match(lines[i])
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        if m and j < len(lines) and lines[j].startswith(m["indent"] + ">>>"):
            out.append(f"{m['indent']}Examples:")
            while j < len(lines) and lines[j].strip():
                out.append("    " + lines[j])
                j += 1
            i = j
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)


class KerasExamples(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain_roles(indent_examples(obj.docstring.value))
