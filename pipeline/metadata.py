"""Reads a run's ML Metadata store: executions per node and pushed models."""

from __future__ import annotations

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

NODE_CONTEXT_TYPE = "node"


def open_store(sqlite_path: str) -> metadata_store.MetadataStore:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = sqlite_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def executions_by_node(sqlite_path: str) -> dict[str, list[str]]:
    """Returns, per node id, the states of its executions, oldest first.

    States are ML Metadata's names: COMPLETE, CACHED, FAILED, RUNNING, NEW.
    """
    store = open_store(sqlite_path)
    result: dict[str, list[str]] = {}
    for context in store.get_contexts_by_type(NODE_CONTEXT_TYPE):
        node_id = context.name.rsplit(".", 1)[-1]
        executions = sorted(
            store.get_executions_by_context(context.id), key=lambda e: e.id
        )
        result[node_id] = [
            metadata_store_pb2.Execution.State.Name(e.last_known_state)
            for e in executions
        ]
    return result


def pushed_model_uris(sqlite_path: str) -> list[str]:
    """Returns the destinations of every model Pusher pushed, oldest first."""
    store = open_store(sqlite_path)
    uris = []
    for artifact in sorted(store.get_artifacts_by_type("PushedModel"), key=lambda a: a.id):
        pushed = artifact.custom_properties.get("pushed")
        if pushed is not None and pushed.int_value == 1:
            uris.append(artifact.custom_properties["pushed_destination"].string_value)
    return uris
