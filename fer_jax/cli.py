"""Helpers shared by the absl entry points in scripts/: one-line errors, quiet library logs."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from absl import flags, logging


def flags_parser(required: Sequence[str]) -> Callable[[list[str]], list[str]]:
    """An `absl.app.run(flags_parser=...)` that reports a bad flag or config key in one line (exit 2)."""

    def parse(argv: list[str]) -> list[str]:
        try:
            rest = flags.FLAGS(argv)
        except flags.Error as e:
            print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
            sys.exit(2)
        for name in required:
            if flags.FLAGS[name].value is None:
                print(f"error: --{name} is required (see --help)", file=sys.stderr)
                sys.exit(2)
        return rest

    return parse


def run_user(fn: Callable[[], Any]) -> Any:
    """Runs `fn` with library INFO logs hidden (unless --verbosity is given); a UserError becomes
    `error: <message>` on stderr and exit code 1."""
    from fer_jax.errors import UserError

    if not flags.FLAGS["verbosity"].present:  # Orbax logs every checkpoint step at INFO
        logging.set_verbosity(logging.WARNING)
    try:
        return fn()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
