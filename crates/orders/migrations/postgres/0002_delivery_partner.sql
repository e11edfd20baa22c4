-- The delivery partner carrying each warehouse order, as the delivery service assigned it
-- (NULL while its job waits for a partner with room).
ALTER TABLE warehouse_orders ADD COLUMN delivery_partner_id UUID;
