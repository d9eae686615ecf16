"""fer-jax: attention networks for facial expression and attribute recognition in JAX/Flax.

`fer_jax.load_pretrained(DIR)` loads a model converted by `porting/convert.py` (no torch needed).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:  # keep `import fer_jax` light: jax/orbax load on first use
    if name == "load_pretrained":
        from fer_jax.pretrained import load_pretrained

        return load_pretrained
    raise AttributeError(f"module 'fer_jax' has no attribute {name!r}")


__all__ = ["load_pretrained"]
