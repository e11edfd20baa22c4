//! Pay calls running in this process, so the payment-event consumer can let one finish instead
//! of racing it.
//!
//! The payment service emits PaymentSucceeded in the transaction that records the capture, so
//! the event is often delivered while the pay call that caused it is still confirming the order.
//! Handled at once, the consumer then finds the order PAYMENT_PENDING and confirms it a second
//! time (a full order load, a payment write, a reservation commit, a cart write and a refused
//! transition), all to learn that the pay call got there first. Waiting for the pay call turns
//! that into one read that finds the order moved on.
//!
//! Only an optimisation: correctness never depends on it. The wait is bounded, a pay call on
//! another node is not seen, and after the wait the consumer does what it always did.

use emporium_kernel::ids::OrderId;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Default)]
pub(super) struct PaysInFlight {
    /// One channel per order being paid; its sender is dropped when the pay call ends, which
    /// wakes every waiter.
    running: Mutex<HashMap<OrderId, watch::Sender<()>>>,
}

/// Marks one pay call as running until dropped (on every path out of the call, errors and
/// cancellation included).
pub(super) struct PayInFlight<'a> {
    registry: &'a PaysInFlight,
    order: OrderId,
    sender: watch::Sender<()>,
}

impl PaysInFlight {
    pub(super) fn begin(&self, order: OrderId) -> PayInFlight<'_> {
        let (sender, _) = watch::channel(());
        // A second pay call for the same order (another request) takes over the mark; the first
        // one's end then leaves it alone (see `Drop`).
        self.lock().insert(order, sender.clone());
        PayInFlight { registry: self, order, sender }
    }

    /// Waits, at most `bound`, for the pay call of `order` running here (if any) to end.
    pub(super) async fn wait_for(&self, order: OrderId, bound: Duration) {
        let Some(mut ended) = self.lock().get(&order).map(watch::Sender::subscribe) else { return };
        // `changed` fails once the sender is gone: the pay call ended.
        if tokio::time::timeout(bound, ended.changed()).await.is_err() {
            tracing::debug!(%order, "the pay call is still running; handling its payment event anyway");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OrderId, watch::Sender<()>>> {
        // The map is left consistent by every operation, so a panic elsewhere cannot spoil it.
        self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for PayInFlight<'_> {
    fn drop(&mut self) {
        let mut running = self.registry.lock();
        if running.get(&self.order).is_some_and(|current| current.same_channel(&self.sender)) {
            running.remove(&self.order);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_waiter_wakes_when_the_pay_call_ends() {
        let registry = Arc::new(PaysInFlight::default());
        let order = OrderId::new();
        let paying = registry.begin(order);
        let waiter = {
            let registry = registry.clone();
            tokio::spawn(async move { registry.wait_for(order, Duration::from_secs(30)).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "the waiter must wait while the pay call runs");
        drop(paying);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").expect("no panic");
        assert!(registry.lock().is_empty(), "the mark is gone with the call");
    }

    #[tokio::test]
    async fn nothing_running_means_no_wait_and_the_bound_holds() {
        let registry = PaysInFlight::default();
        let order = OrderId::new();
        tokio::time::timeout(Duration::from_secs(5), registry.wait_for(order, Duration::from_secs(30)))
            .await
            .expect("no pay call running: returns at once");
        let _paying = registry.begin(order);
        tokio::time::timeout(Duration::from_secs(5), registry.wait_for(order, Duration::from_millis(10)))
            .await
            .expect("the bound ends the wait");
    }

    #[tokio::test]
    async fn the_first_call_ending_leaves_a_second_calls_mark() {
        let registry = PaysInFlight::default();
        let order = OrderId::new();
        let first = registry.begin(order);
        let second = registry.begin(order);
        drop(first);
        assert!(registry.lock().contains_key(&order), "the second call still runs");
        drop(second);
        assert!(registry.lock().is_empty());
    }
}
