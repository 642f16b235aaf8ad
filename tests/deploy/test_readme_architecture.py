"""The README's map of the code ("How it works") names modules and functions that exist, and
every module of the package is on the map."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections import defaultdict
from pathlib import Path

import poller

ROOT = Path(__file__).resolve().parents[2]


def _section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n{title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def _index() -> dict[str, list[object]]:
    """Every module of the package (by its last name) and every class, function and constant
    defined in one, by name."""
    found: dict[str, list[object]] = defaultdict(list)
    for info in pkgutil.walk_packages(poller.__path__, "poller."):
        if info.name.endswith("__main__"):
            continue  # running it is the command line
        module = importlib.import_module(info.name)
        found[info.name.rsplit(".", 1)[1]].append(module)
        for name, value in vars(module).items():
            if getattr(value, "__module__", module.__name__) == module.__name__ or name.isupper():
                found[name].append(value)
    return found


def _map_rows() -> list[str]:
    rows = re.findall(r"^\| (`[^|]+`) \|", _section("## How it works"), re.M)
    return [name for cell in rows for name in re.findall(r"`([\w/]+)`", cell)]


def test_every_module_on_the_map_exists() -> None:
    names = _map_rows()
    assert names, "the module map is gone"
    for name in names:
        path = ROOT / "poller" / name
        assert path.is_dir() or path.with_suffix(".py").is_file(), name


def test_every_module_of_the_package_is_on_the_map() -> None:
    on_map = {name.rstrip("/") for name in _map_rows()}
    modules = {p.stem for p in (ROOT / "poller").glob("*.py")} - {"__init__", "__main__"}
    packages = {p.name for p in (ROOT / "poller").iterdir() if (p / "__init__.py").is_file()}
    assert modules | packages <= on_map, sorted((modules | packages) - on_map)


def test_the_path_of_one_job_names_real_code() -> None:
    text = _section("## How it works")
    path = text[text.index("One job, from `LPUSH`") :]
    references = re.findall(r"`((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*)`", path)
    index = _index()
    checked = 0
    for ref in references:
        head, *rest = ref.split(".")
        if head not in index:
            continue  # a Redis command or a field name, not code
        candidates = index[head]
        for attr in rest:
            candidates = [getattr(c, attr) for c in candidates if hasattr(c, attr)]
        assert candidates, f"README names {ref}, which the code does not have"
        checked += 1
    assert checked >= 8, references


def test_the_map_names_each_store_part() -> None:
    from poller.store import store

    parts = {cls.__module__.rsplit(".", 1)[1] for cls in inspect.getmro(store.Store)[1:-1]}
    text = _section("## How it works")
    assert all(f"`{part}`" in text for part in parts), parts
