"""The method registry: --method NAME -> its Recipe (core/methods/base.py).

Every module of this package that defines `RECIPE` is registered when the package is first imported, so a new
method is one recipe file here and nothing else; `register` adds a recipe from elsewhere (a test, a plug-in).
Nothing outside this registry compares method names.
"""
import importlib
import pkgutil

from core.methods.base import Recipe

_RECIPES: dict = {}


def register(recipe: Recipe) -> Recipe:
    """Adds `recipe` under its name (and its presets); a name or preset already taken by another recipe is refused."""
    if not recipe.name:
        raise ValueError(f"recipe {type(recipe).__name__} has no name")
    old = _RECIPES.get(recipe.name)
    if old is not None and type(old) is not type(recipe):
        raise ValueError(f"method {recipe.name!r} is already registered by {type(old).__name__}")
    for name in recipe.presets:
        owner = next((r.name for r in _RECIPES.values() if name in r.presets and r.name != recipe.name), None)
        if owner is not None:
            raise ValueError(f"preset {name!r} of method {recipe.name!r} is already a preset of {owner!r}")
    _RECIPES[recipe.name] = recipe
    return recipe


def unregister(name: str) -> None:
    """Removes the recipe registered under `name` (a test's or a plug-in's), so it leaks into nothing else."""
    get(name)
    del _RECIPES[name]


def get(name: str) -> Recipe:
    try:
        return _RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; registered methods: {', '.join(sorted(_RECIPES))}") from None


def names() -> list:
    return list(_RECIPES)


def recipes() -> list:
    return list(_RECIPES.values())


def presets() -> dict:
    """{preset name: option values including 'method'} over every registered recipe."""
    return {name: {**values, "method": r.name} for r in _RECIPES.values() for name, values in r.presets.items()}


def _discover() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "RECIPE"):
            register(module.RECIPE)


_discover()
