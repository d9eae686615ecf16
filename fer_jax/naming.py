"""Module-path patterns and renames, shared by checkpoint conversion and weight merging.

Paths are dotted torch-style module paths (`cat_head0.sa.conv1x1.0`); a Flax variable path
`params/cat_head0/sa/conv1x1/0/kernel` has the module path `cat_head0.sa.conv1x1.0`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence


def matches(module_path: str, patterns: Iterable[str]) -> bool:
    """True if `module_path` is, lies under, or glob-matches one of `patterns` (`fc`, `cat_head*`)."""
    return any(module_path == p or module_path.startswith(p + ".") or fnmatch.fnmatchcase(module_path, p)
               for p in patterns)


def rename(path: str, renames: Sequence[tuple[str, str]]) -> str:
    """Replaces the first matching module prefix: ("conv1", "features.0") maps conv1.weight to features.0.weight."""
    for old, new in renames:
        if path == old or path.startswith(old + "."):
            return new + path[len(old):]
    return path
