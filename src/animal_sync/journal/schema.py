"""The journal's schema history: the migrations/NNNN_name.py files, loaded as one sqlite-utils migration set."""

from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path

from sqlite_utils import Migrations

__all__ = ["MIGRATION_SET", "migration_files", "migrations"]

MIGRATION_SET = "animal_sync"


def _migrations_dir() -> Path:
    """Inside an installed wheel the schema history ships in the package; in a checkout it is ../../../migrations."""
    packaged = resources.files("animal_sync") / "migrations"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[3] / "migrations"


def migration_files() -> list[Path]:
    """The schema history, one file a step, in the order the steps apply."""
    return sorted(_migrations_dir().glob("[0-9]*.py"))


def migrations() -> Migrations:
    """Register each migrations/NNNN_name.py file's `migrate(db)` on one sqlite-utils migration set, in order."""
    registry = Migrations(MIGRATION_SET)
    for path in migration_files():
        spec = importlib.util.spec_from_file_location(f"animal_sync_migration_{path.stem}", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        registry(name=path.stem)(module.migrate)
    return registry

