-- The payment an order records (its id lets an admin refund it through /payments/{id}/refund).
ALTER TABLE orders ADD COLUMN payment_id BLOB;
