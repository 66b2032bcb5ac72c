"""The Zarr feature store: schema, writers, readers, HDF5 export, checks and summaries."""
# first: it installs the checked codec pipeline before any array is opened
import storage.integrity  # noqa: F401  isort: skip
from storage.check import assert_consistent, check_store, repair_store
from storage.export import export_h5
from storage.info import format_info, store_info
from storage.provenance import RANDOM_INIT, provenance_record, sha256_file
from storage.readers import load_variable, open_any
from storage.schema import (ALL_VARIABLES, DONE, FAILED, MISSING, PROTOCOLS, SCHEMA_VERSION, STEPS,
                            STYLE_VARIABLES, VARIABLES, StoreLayout, schema_table)
from storage.store import (StoreError, as_str, create_phrase_table, create_store, layout_of, open_group,
                           open_store, read_attrs, set_annotation_record, set_provenance,
                           set_step_warning, write_style_table, write_table)
from storage.upgrade import upgrade_store
from storage.writers import StepWriter, failures, get_writer

__all__ = [
    "ALL_VARIABLES", "DONE", "FAILED", "MISSING", "PROTOCOLS", "RANDOM_INIT", "SCHEMA_VERSION", "STEPS", "STYLE_VARIABLES", "VARIABLES",
    "StepWriter", "StoreError", "as_str", "StoreLayout", "assert_consistent", "check_store",
    "create_phrase_table", "create_store", "export_h5", "failures", "format_info",
    "get_writer", "layout_of", "load_variable", "open_any", "open_group", "open_store", "provenance_record",
    "read_attrs", "repair_store", "schema_table", "set_annotation_record", "set_provenance", "set_step_warning",
    "sha256_file", "store_info", "upgrade_store",
    "write_style_table", "write_table",
]
