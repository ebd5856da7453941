"""Writes of prompt sets, by concern: the import, search indexing, deletes. Callers import from here."""

from __future__ import annotations

from distillapp.prompts.services.imports import (
    IMPORT_LOCK_CLASS,
    ImportResult,
    PromptImportError,
    clean_fraction,
    clean_seed,
    prompt_set_import,
)
from distillapp.prompts.services.search import (
    prompt_set_index_search,
    search_index_run_execute,
    search_index_start,
)
from distillapp.prompts.services.sets import (
    PromptSetInUse,
    prompt_set_delete,
    prompt_sets_delete_for_project,
)

__all__ = [
    "IMPORT_LOCK_CLASS",
    "ImportResult",
    "PromptImportError",
    "PromptSetInUse",
    "clean_fraction",
    "clean_seed",
    "prompt_set_delete",
    "prompt_set_import",
    "prompt_set_index_search",
    "prompt_sets_delete_for_project",
    "search_index_run_execute",
    "search_index_start",
]
