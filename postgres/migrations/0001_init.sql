-- 0001: the registry table.
--
-- The first ten columns are the platform's dtma_container_registry columns,
-- with its names and types (no foreign key to account_tool_instances: DTMA's
-- database does not hold that table). The rest is what DTMA needs to
-- recreate and track a container. Migrations are additive: never edit an
-- applied file, add a new one.

CREATE TABLE dtma_container_registry (
    id                       UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    account_tool_instance_id UUID,
    container_name           VARCHAR(255) NOT NULL,
    docker_image_url         TEXT NOT NULL,
    container_id             VARCHAR(64),
    dtma_status              VARCHAR(50) NOT NULL,
    docker_status            VARCHAR(50),
    port_bindings            JSONB DEFAULT '{}'::jsonb,
    created_at               TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at               TIMESTAMPTZ NOT NULL DEFAULT now(),

    host_id       TEXT NOT NULL,
    name          TEXT NOT NULL,
    ports         JSONB NOT NULL DEFAULT '[]'::jsonb,
    spec          JSONB NOT NULL,
    spec_hash     TEXT NOT NULL,
    desired_state TEXT NOT NULL,
    pending_op    TEXT NOT NULL DEFAULT '',
    tracking      TEXT NOT NULL DEFAULT 'label',
    last_error    TEXT NOT NULL DEFAULT '',
    started_at    TIMESTAMPTZ,
    finished_at   TIMESTAMPTZ,
    exit_code     INTEGER NOT NULL DEFAULT 0,
    restart_count INTEGER NOT NULL DEFAULT 0,

    CONSTRAINT dtma_container_registry_host_name_key UNIQUE (host_id, name),
    CONSTRAINT dtma_container_registry_host_container_name_key UNIQUE (host_id, container_name)
);

CREATE UNIQUE INDEX dtma_container_registry_host_account_key
    ON dtma_container_registry (host_id, account_tool_instance_id)
    WHERE account_tool_instance_id IS NOT NULL;

CREATE INDEX dtma_container_registry_host_created_idx
    ON dtma_container_registry (host_id, created_at, name);
