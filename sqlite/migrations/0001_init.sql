-- 0001: the instance registry.
--
-- One row per managed instance, scoped by host_id. Times are INTEGER unix
-- microseconds in UTC; started_at/finished_at are NULL when unknown.
-- account_tool_instance_id is NULL when unset, so the partial unique index
-- lets any number of rows go without one. spec holds the requested
-- dtma.Spec as JSON, env values included: the file is as secret as they are.
CREATE TABLE dtma_container_registry (
    id                       TEXT    NOT NULL PRIMARY KEY CHECK (id <> ''),
    host_id                  TEXT    NOT NULL CHECK (host_id <> ''),
    name                     TEXT    NOT NULL CHECK (name <> ''),
    account_tool_instance_id TEXT             CHECK (account_tool_instance_id <> ''),
    container_name           TEXT    NOT NULL CHECK (container_name <> ''),
    docker_image_url         TEXT    NOT NULL,
    container_id             TEXT    NOT NULL DEFAULT '',
    dtma_status              TEXT    NOT NULL,
    docker_status            TEXT    NOT NULL DEFAULT '',
    port_bindings            TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(port_bindings)),
    ports                    TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(ports)),
    spec                     TEXT    NOT NULL CHECK (json_valid(spec)),
    spec_hash                TEXT    NOT NULL,
    desired_state            TEXT    NOT NULL,
    pending_op               TEXT    NOT NULL DEFAULT '',
    tracking                 TEXT    NOT NULL,
    last_error               TEXT    NOT NULL DEFAULT '',
    started_at               INTEGER,
    finished_at              INTEGER,
    exit_code                INTEGER NOT NULL DEFAULT 0,
    restart_count            INTEGER NOT NULL DEFAULT 0,
    created_at               INTEGER NOT NULL,
    updated_at               INTEGER NOT NULL
) STRICT;

CREATE UNIQUE INDEX dtma_container_registry_host_name
    ON dtma_container_registry (host_id, name);

CREATE UNIQUE INDEX dtma_container_registry_host_account
    ON dtma_container_registry (host_id, account_tool_instance_id)
    WHERE account_tool_instance_id IS NOT NULL;

CREATE UNIQUE INDEX dtma_container_registry_host_container_name
    ON dtma_container_registry (host_id, container_name);

CREATE INDEX dtma_container_registry_host_created
    ON dtma_container_registry (host_id, created_at, name);

CREATE INDEX dtma_container_registry_created
    ON dtma_container_registry (created_at, name);
