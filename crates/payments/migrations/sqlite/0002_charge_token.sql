-- The payment method token a pending charge was sent with, kept until the payment leaves
-- 'pending': a charge whose sender died before the gateway saw it is sent again with it (the
-- idempotency key makes that safe). A gateway token, never a card number.
ALTER TABLE payments ADD COLUMN charge_token TEXT;
