//! The background worker: expires unpaid checkouts, resolves unknown payments, finishes
//! interrupted settlements and completes orders whose return window closed.

use super::*;

impl OrdersService {
    // --- the worker -------------------------------------------------------------------------------

    /// An unpaid checkout whose hold ran out: a payment that succeeded after all confirms it (or
    /// is refunded if the stock is gone), otherwise it expires and gives everything back.
    pub(super) async fn expire(&self, id: OrderId) -> Result<()> {
        let order = self.load(id).await?;
        if order.status != OrderStatus::PaymentPending {
            return Ok(());
        }
        if let Some(payment) = self.clients.payments.give_up(&id.to_string()).await.map_err(dependency)? {
            store::set_payment(&self.db, id, &summary(&payment)).await?;
            if payment.status == PaymentStatus::Captured {
                return self.confirm(id).await;
            }
        }
        self.change(&order, OrderStatus::Expired, WORKER, Some("not paid before the stock hold expired")).await?;
        self.settle(id).await
    }

    /// One pass of the worker: expire unpaid checkouts, recover interrupted ones, finish
    /// compensations, split confirmed orders whose event was lost, complete delivered orders.
    pub async fn run_once(&self) -> Result<usize> {
        let now = self.clock.now();
        let mut done = 0;
        // First, so a dead call's hold that has run out expires in this same pass.
        let stale = now - chrono::Duration::from_std(ADOPT_HOLD_AFTER).expect("small");
        for id in store::in_status_since(&self.db, OrderStatus::Created, stale, 100).await? {
            let order = self.adopt_hold(self.load(id).await?).await?;
            if order.status != OrderStatus::Created {
                done += 1;
            }
        }
        for id in store::due_to_expire(&self.db, now, 100).await? {
            self.expire(id).await?;
            done += 1;
        }
        let stale = now - chrono::Duration::from_std(STALE_CREATED).expect("small");
        for id in store::in_status_since(&self.db, OrderStatus::Created, stale, 100).await? {
            // No hold was found above: the call died before its reservation (or the
            // reservation failed and so did discarding the order).
            let order = self.load(id).await?;
            self.change(&order, OrderStatus::Cancelled, WORKER, Some("the checkout was interrupted")).await?;
            self.settle(id).await?;
            done += 1;
        }
        let stale = now - chrono::Duration::from_std(STALE_UNSETTLED).expect("small");
        for id in store::unsettled(&self.db, stale, 100).await? {
            self.settle(id).await?;
        }
        let stale = now - chrono::Duration::from_std(STALE_CONFIRMED).expect("small");
        for id in store::in_status_since(&self.db, OrderStatus::Confirmed, stale, 100).await? {
            self.assign_warehouses(id).await?;
        }
        for id in store::due_to_complete(&self.db, now - self.settings.return_window, 100).await? {
            let order = self.load(id).await?;
            if self.change(&order, OrderStatus::Completed, WORKER, Some("the return window closed")).await? {
                done += 1;
            }
        }
        Ok(done)
    }

    /// Runs at once (recovering what a crash left) and then every `interval` until shutdown.
    pub async fn run_worker(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        loop {
            if let Err(err) = self.run_once().await {
                tracing::warn!(error = %err, "order worker pass failed; will retry");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}
