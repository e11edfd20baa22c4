-- The warehouses a member of warehouse staff works at (a JSON array of ids; admins assign them).
ALTER TABLE users ADD COLUMN warehouse_ids JSONB NOT NULL DEFAULT '[]';
