"""The inference-log store: schema, migrations, validated idempotent ingest and windowed reads."""

from pipeline.store.engine import insert_for, is_postgres, make_engine
from pipeline.store.migrate import current_revision, downgrade, upgrade
from pipeline.store.read import read_window
from pipeline.store.schema import TABLES, Decision, ErrorType, Status, metadata
from pipeline.store.validate import RowError, UnknownTable, validate_frame
from pipeline.store.write import IngestResult, decode_embeddings, encode_embedding, ingest, ingest_batch

__all__ = [
    "TABLES",
    "Decision",
    "ErrorType",
    "IngestResult",
    "RowError",
    "Status",
    "UnknownTable",
    "current_revision",
    "decode_embeddings",
    "downgrade",
    "encode_embedding",
    "ingest",
    "ingest_batch",
    "insert_for",
    "is_postgres",
    "make_engine",
    "metadata",
    "read_window",
    "upgrade",
    "validate_frame",
]
