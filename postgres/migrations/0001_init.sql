-- 0001: the registry table.
--
-- The first ten columns are the platform's dtma_container_registry columns,
-- with its names and types (no foreign key to account_tool_instances: DTMA's
-- database may not hold that table). The rest is what DTMA needs to
-- recreate and track a container. The table may already exist, created by
-- the platform's own migration with only its columns: everything here is
-- additive (IF NOT EXISTS) and DTMA's columns have defaults, so rows the
-- platform wrote (host_id '') are kept and never read by any agent.
-- Migrations are additive: never edit an applied file, add a new one.

CREATE TABLE IF NOT EXISTS dtma_container_registry (
    id                       UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    account_tool_instance_id UUID,
    container_name           VARCHAR(255) NOT NULL,
    docker_image_url         TEXT NOT NULL,
    container_id             VARCHAR(64),
    dtma_status              VARCHAR(50) NOT NULL,
    docker_status            VARCHAR(50),
    port_bindings            JSONB DEFAULT '{}'::jsonb,
    created_at               TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at               TIMESTAMPTZ NOT NULL DEFAULT now()
);

ALTER TABLE dtma_container_registry
    ADD COLUMN IF NOT EXISTS host_id       TEXT NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS name          TEXT NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS ports         JSONB NOT NULL DEFAULT '[]'::jsonb,
    ADD COLUMN IF NOT EXISTS spec          JSONB NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN IF NOT EXISTS spec_hash     TEXT NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS desired_state TEXT NOT NULL DEFAULT 'running',
    ADD COLUMN IF NOT EXISTS pending_op    TEXT NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS tracking      TEXT NOT NULL DEFAULT 'label',
    ADD COLUMN IF NOT EXISTS last_error    TEXT NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS started_at    TIMESTAMPTZ,
    ADD COLUMN IF NOT EXISTS finished_at   TIMESTAMPTZ,
    ADD COLUMN IF NOT EXISTS exit_code     INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS restart_count INTEGER NOT NULL DEFAULT 0;

CREATE UNIQUE INDEX IF NOT EXISTS dtma_container_registry_host_name_key
    ON dtma_container_registry (host_id, name)
    WHERE host_id <> '';

CREATE UNIQUE INDEX IF NOT EXISTS dtma_container_registry_host_container_name_key
    ON dtma_container_registry (host_id, container_name)
    WHERE host_id <> '';

CREATE UNIQUE INDEX IF NOT EXISTS dtma_container_registry_host_account_key
    ON dtma_container_registry (host_id, account_tool_instance_id)
    WHERE account_tool_instance_id IS NOT NULL AND host_id <> '';

CREATE INDEX IF NOT EXISTS dtma_container_registry_host_created_idx
    ON dtma_container_registry (host_id, created_at, name);
