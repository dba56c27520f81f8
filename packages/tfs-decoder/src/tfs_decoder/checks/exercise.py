"""``tfs exercise`` and ``tfs check``: a starting file for each component, and tfs's own
checks of that component run on the learner's class.

The checks themselves are public API of the package that owns the component
(``tfs_attention.checks.check_attention`` and so on); this module finds the learner's
class, runs them and turns the report into an exit status: 0 when every check passes, 1
when one fails or is not implemented yet, 2 for a usage error (a :class:`UsageError`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

from tfs_core.checking import trimmed
from tfs_decoder.errors import UsageError


@dataclass(frozen=True)
class Component:
    """One exercise: the check that tests it and the starting file's class or function."""

    name: str
    check: str  # "module:function"
    target: str
    what: str

    @property
    def template(self) -> str:
        return self.name.replace("-", "_") + ".py"


# In the curriculum's order (docs/curriculum.md): Hilton's test of the mask needs the
# positions and attention first; then the rest of the architecture in ARENA 1.1's order, the
# loss its training uses, and the whole decoder last.
COMPONENTS = [
    Component(
        "pos-embed",
        "tfs_embeddings.checks:check_pos_embed",
        "LearnedPositionalEmbedding",
        "learned positional embedding (W_pos)",
    ),
    Component(
        "attention",
        "tfs_attention.checks:check_attention",
        "MultiHeadAttention",
        "multi-head causal self-attention (W_Q, W_K, W_V, W_O)",
    ),
    Component("layernorm", "tfs_decoder.checks:check_layernorm", "LayerNorm", "LayerNorm"),
    Component("embed", "tfs_embeddings.checks:check_embed", "Embed", "token embedding (W_E)"),
    Component("mlp", "tfs_mlp.checks:check_mlp", "MLP", "the MLP (W_in, W_out, GELU)"),
    Component(
        "block",
        "tfs_decoder.checks:check_block",
        "ResidualBlock",
        "the pre-LayerNorm residual block",
    ),
    Component("unembed", "tfs_embeddings.checks:check_unembed", "Unembed", "unembedding (W_U)"),
    Component("loss", "tfs_decoder.checks:check_loss", "next_token_loss", "the next-token loss"),
    Component("decoder", "tfs_decoder.checks:check_decoder", "Decoder", "the whole decoder"),
]
BY_NAME = {component.name: component for component in COMPONENTS}


def component_named(name: str) -> Component:
    if name not in BY_NAME:
        raise UsageError(f"COMPONENT: expected one of {', '.join(BY_NAME)}, got {name!r}")
    return BY_NAME[name]


def listing() -> str:
    """``tfs exercise --list``: the components in curriculum order."""
    width = max(len(c.name) for c in COMPONENTS)
    return "\n".join(f"{c.name:<{width}}  {c.what}" for c in COMPONENTS)


def run_exercise(args: argparse.Namespace) -> int:
    if args.list:
        print(listing())
        return 0
    if args.component is None:
        raise UsageError("COMPONENT: expected one of " + ", ".join(BY_NAME) + " (or --list)")
    component = component_named(args.component)
    out = Path(args.out or f"my_{component.template}")
    if out.exists() and not args.force:
        raise UsageError(f"--out: {out} exists; pass --force to replace it")
    text = resources.files("tfs_decoder.checks.exercise_files").joinpath(component.template)
    out.write_text(text.read_text().replace("{file}", str(out)))
    print(
        f"wrote {out}; when its code is written, run: tfs check {component.name} "
        f"{out}:{component.target}"
    )
    return 0


def run_check(args: argparse.Namespace) -> int:
    component = component_named(args.component)
    target = load_target(args.target, want_class=component.name != "loss")
    module_name, function_name = component.check.split(":")
    check = getattr(importlib.import_module(module_name), function_name)
    report = check(target, learning=not args.no_learning)
    if report.construction_error is not None:
        raise UsageError(str(report))
    print(report)
    return 0 if report.ok else 1


def load_target(target: str, *, want_class: bool, argument: str = "TARGET") -> Any:
    """The class (or function) ``path/to/file.py:Name`` or ``package.module:Name`` names;
    a :class:`UsageError` naming ``argument`` (the flag or argument that gave ``target``)
    when there is none."""
    where, _, name = target.rpartition(":")
    if not where or not name:
        raise UsageError(
            f"{argument}: expected path/to/file.py:ClassName or package.module:ClassName, got "
            f"{target!r}"
        )
    if where.endswith(".py"):
        module = _load_file(Path(where), argument)
    else:
        module = _import(where, argument)
    found = getattr(module, name, None)
    if found is None:
        own = [
            n for n, v in vars(module).items() if getattr(v, "__module__", "") == module.__name__
        ]
        raise UsageError(
            f"{argument}: {where} has no {name!r} (it defines {', '.join(own) or 'none'})"
        )
    if want_class and not inspect.isclass(found):
        raise UsageError(f"{argument}: expected a class, got {type(found).__name__} {name!r}")
    if not want_class and not inspect.isfunction(found):
        raise UsageError(f"{argument}: expected a function, got {type(found).__name__} {name!r}")
    return found


def _load_file(path: Path, argument: str) -> ModuleType:
    if not path.is_file():
        raise UsageError(f"{argument}: no file {path}")
    # The file's folder goes on the path, so it can import the learner's other files.
    sys.path.insert(0, str(path.resolve().parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{argument}: {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # the learner's file: show its own lines, no traceback
        raise UsageError(f"importing {path} raised {trimmed(error, spec.origin)}") from error
    return module


def _import(name: str, argument: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        raise UsageError(f"{argument}: no module {name!r} ({error})") from error
