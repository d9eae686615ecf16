"""Helpers shared by the absl entry points in scripts/: one-line errors, quiet library logs."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from absl import flags, logging


def flags_parser(required: Sequence[str]) -> Callable[[list[str]], list[str]]:
    """An `absl.app.run(flags_parser=...)` that reports a bad flag or config key in one line (exit 2)."""

    def parse(argv: list[str]) -> list[str]:
        from fer_jax.errors import UserError

        try:
            rest = flags.FLAGS(argv)
            values = {name: flags.FLAGS[name].value for name in required}
            for value in values.values():
                hasattr(value, "keys")  # a --config that failed to load raises here, not later mid-run
        except (flags.Error, UserError, OSError, AttributeError, KeyError, ValueError, TypeError) as e:
            print(f"error: bad command line: {_one_line(e)}", file=sys.stderr)
            sys.exit(2)
        for name, value in values.items():
            if value is None:
                print(f"error: --{name} is required (see --help)", file=sys.stderr)
                sys.exit(2)
        return rest

    return parse


def _one_line(e: BaseException) -> str:
    """ml_collections reports an unknown --config.<key> as AttributeError("'key'\\nDid you mean ...") and a
    missing config file over several indented lines: fold any of them into one line."""
    text = (str(e.args[0]) if e.args else str(e)).strip("'").replace("\\n", "\n").replace("\\'", "'")
    parts = [p.strip() for p in text.splitlines() if p.strip()]
    if isinstance(e, AttributeError) and parts:
        parts[0] = f"unknown config key {parts[0]}"
    return "; ".join(parts)


def exit_code(fn: Callable[[], Any], code: int = 2) -> int:
    """For argparse entry points (porting/): 0 if `fn` succeeds; a UserError becomes
    `error: <message>` on stderr and the returned `code`."""
    from fer_jax.errors import UserError

    try:
        fn()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return code
    return 0


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
