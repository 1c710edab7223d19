"""Reading JSON recipes: the training arguments of one run, in one file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class RecipeError(ValueError):
    """A recipe file that cannot be read."""


def read_recipe(path: str | Path) -> dict[str, Any]:
    """Load a recipe, dropping documentation keys (any key starting with '_', such as '_comment')."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {str(path)!r} does not exist; see recipes/ for examples")
    try:
        recipe = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RecipeError(f"recipe {str(path)!r} is not valid JSON: {error}") from None
    if not isinstance(recipe, dict):
        raise RecipeError(f"recipe {str(path)!r} must hold one JSON object of argument names and values")
    return {key: value for key, value in recipe.items() if not key.startswith("_")}
