//! Pay calls running in this process, so the payment-event consumer can let one finish instead
//! of racing it.
//!
//! The payment service emits PaymentSucceeded in the transaction that records the capture, so
//! the event is often delivered while the pay call that caused it is still confirming the order.
//! Handled at once, the consumer then finds the order PAYMENT_PENDING and confirms it a second
//! time (a full order load, a payment write, a reservation commit, a cart write and a refused
//! transition), all to learn that the pay call got there first. Waiting for the pay call turns
//! that into nothing at all when the pay call confirmed the order with the event's payment, and
//! into one read that finds the order moved on otherwise.
//!
//! The event often comes after the call has ended (the event bus takes events in bursts), so
//! what a call confirmed is remembered for a while after it ends ([`RECENT_FOR`], at most
//! [`RECENT_MAX`] orders): the consumer then needs no read at all either.
//!
//! Only an optimisation: correctness never depends on it. The wait is bounded, a pay call on
//! another node is not seen, and after the wait the consumer does what it always did.

use emporium_kernel::ids::{OrderId, PaymentId};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a confirmation is remembered after its pay call ended: far longer than an event
/// takes to arrive, unless delivery is stalled (then the consumer reads, as without this).
const RECENT_FOR: Duration = Duration::from_secs(60);
/// The most confirmations remembered (oldest forgotten first): a few MB at most.
const RECENT_MAX: usize = 50_000;
use tokio::sync::watch;

#[derive(Default)]
pub(super) struct PaysInFlight {
    /// One channel per order being paid, carrying the payment the call confirmed the order with
    /// (once it has); its sender is dropped when the pay call ends, which wakes every waiter.
    running: Mutex<HashMap<OrderId, watch::Sender<Option<PaymentId>>>>,
    /// Orders the calls that ended confirmed, with the payment and when, oldest first.
    recent: Mutex<Recent>,
}

#[derive(Default)]
struct Recent {
    by_order: HashMap<OrderId, (PaymentId, Instant)>,
    order: VecDeque<OrderId>,
}

impl Recent {
    fn remember(&mut self, order: OrderId, payment: PaymentId) {
        let now = Instant::now();
        while self.order.len() >= RECENT_MAX
            || self.order.front().is_some_and(|o| self.by_order.get(o).is_none_or(|(_, at)| now - *at > RECENT_FOR))
        {
            let Some(oldest) = self.order.pop_front() else { break };
            self.by_order.remove(&oldest);
        }
        if self.by_order.insert(order, (payment, now)).is_none() {
            self.order.push_back(order);
        }
    }

    fn confirmed(&self, order: OrderId) -> Option<PaymentId> {
        self.by_order.get(&order).filter(|(_, at)| at.elapsed() <= RECENT_FOR).map(|(payment, _)| *payment)
    }
}

/// Marks one pay call as running until dropped (on every path out of the call, errors and
/// cancellation included).
pub(super) struct PayInFlight<'a> {
    registry: &'a PaysInFlight,
    order: OrderId,
    sender: watch::Sender<Option<PaymentId>>,
}

impl PaysInFlight {
    pub(super) fn begin(&self, order: OrderId) -> PayInFlight<'_> {
        let (sender, _) = watch::channel(None);
        // A second pay call for the same order (another request) takes over the mark; the first
        // one's end then leaves it alone (see `Drop`).
        self.lock().insert(order, sender.clone());
        PayInFlight { registry: self, order, sender }
    }

    /// Waits, at most `bound`, for the pay call of `order` running here (if any) to end. Returns
    /// the payment that call confirmed the order with, if it did.
    pub(super) async fn wait_for(&self, order: OrderId, bound: Duration) -> Option<PaymentId> {
        let Some(mut ended) = self.lock().get(&order).map(watch::Sender::subscribe) else {
            return self.recent().confirmed(order);
        };
        // Wait for the sender to go: `changed` also wakes on `confirmed`, which comes first.
        let closed = async { while ended.changed().await.is_ok() {} };
        if tokio::time::timeout(bound, closed).await.is_err() {
            tracing::debug!(%order, "the pay call is still running; handling its payment event anyway");
            return None;
        }
        *ended.borrow()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OrderId, watch::Sender<Option<PaymentId>>>> {
        // The map is left consistent by every operation, so a panic elsewhere cannot spoil it.
        self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        // As above: every operation leaves it consistent.
        self.recent.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl PayInFlight<'_> {
    /// The order is CONFIRMED and records `payment`: that payment's event has nothing left to do.
    pub(super) fn confirmed(&self, payment: PaymentId) {
        self.sender.send_replace(Some(payment));
    }
}

impl Drop for PayInFlight<'_> {
    fn drop(&mut self) {
        if let Some(payment) = *self.sender.borrow() {
            // Before the mark goes, so a waiter always finds one or the other.
            self.registry.recent().remember(self.order, payment);
        }
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
        let payment = PaymentId::new();
        paying.confirmed(payment);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "confirming is not the end of the call");
        drop(paying);
        let confirmed = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").expect("no panic");
        assert_eq!(confirmed, Some(payment), "the waiter learns what the call confirmed the order with");
        assert!(registry.lock().is_empty(), "the mark is gone with the call");
        let later = tokio::time::timeout(Duration::from_secs(5), registry.wait_for(order, Duration::from_secs(30)))
            .await
            .expect("nothing running: no wait");
        assert_eq!(later, Some(payment), "an event arriving after the call still learns what it confirmed");
        assert_eq!(registry.wait_for(OrderId::new(), Duration::from_secs(30)).await, None, "other orders: nothing");
    }

    #[test]
    fn confirmations_are_forgotten_oldest_first_beyond_the_limit() {
        let mut recent = Recent::default();
        let first = OrderId::new();
        recent.remember(first, PaymentId::new());
        let mut last = first;
        for _ in 0..RECENT_MAX {
            last = OrderId::new();
            recent.remember(last, PaymentId::new());
        }
        assert_eq!(recent.confirmed(first), None, "the oldest made room");
        assert!(recent.confirmed(last).is_some());
        assert_eq!((recent.by_order.len(), recent.order.len()), (RECENT_MAX, RECENT_MAX));
    }

    #[tokio::test]
    async fn nothing_running_means_no_wait_and_the_bound_holds() {
        let registry = PaysInFlight::default();
        let order = OrderId::new();
        let idle = tokio::time::timeout(Duration::from_secs(5), registry.wait_for(order, Duration::from_secs(30)))
            .await
            .expect("no pay call running: returns at once");
        assert_eq!(idle, None);
        let paying = registry.begin(order);
        paying.confirmed(PaymentId::new());
        let bounded = tokio::time::timeout(Duration::from_secs(5), registry.wait_for(order, Duration::from_millis(10)))
            .await
            .expect("the bound ends the wait");
        assert_eq!(bounded, None, "a call still running has not finished confirming: nothing is vouched for");
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
        assert!(registry.recent().by_order.is_empty(), "neither confirmed the order: nothing vouched for");
    }
}
