-- A movement made on behalf of another service's operation (a return's restock) carries that
-- operation's key: a retried operation finds its movement and does not move the stock again.
ALTER TABLE stock_ledger ADD COLUMN operation_key TEXT;
CREATE UNIQUE INDEX stock_ledger_operation_key ON stock_ledger (operation_key);
