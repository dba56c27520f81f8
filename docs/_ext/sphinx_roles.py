"""A griffe extension for the documentation site: the packages' docstrings are written for
reading in the source, with reST roles (``:class:`~tfs_core.Report```) and ``::`` before
literal blocks. Markdown shows neither well, so the roles become code spans (the last
name only where reST's ``~`` asks for it) and a ``::`` that opens a literal block becomes
``:``; the indented block after it is already a Markdown code block.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`(~?)([^`]+)`")
LITERAL = re.compile(r"(\S)::$", re.M)


def _role(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def to_markdown(text: str) -> str:
    """``text`` with reST roles as code spans and literal-block ``::`` as ``:``."""
    return LITERAL.sub(r"\1:", ROLE.sub(_role, text))


class SphinxRoles(griffe.Extension):
    """Rewrites every docstring with :func:`to_markdown` as griffe loads it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
