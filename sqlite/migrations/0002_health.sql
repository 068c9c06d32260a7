-- 0002: the observed health of an instance (issue 9). Written only when
-- the state changes (UpdateHealth), never per probe. health_changed_at is
-- unix microseconds, NULL when never.
ALTER TABLE dtma_container_registry ADD COLUMN health_state      TEXT    NOT NULL DEFAULT '';
ALTER TABLE dtma_container_registry ADD COLUMN health_error      TEXT    NOT NULL DEFAULT '';
ALTER TABLE dtma_container_registry ADD COLUMN health_changed_at INTEGER;
