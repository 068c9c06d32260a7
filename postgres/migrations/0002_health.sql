-- 0002: the observed health of an instance (issue 9). Written only when
-- the state changes (UpdateHealth), never per probe. Additive.
ALTER TABLE dtma_container_registry
    ADD COLUMN IF NOT EXISTS health_state      TEXT NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS health_error      TEXT NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS health_changed_at TIMESTAMPTZ;
