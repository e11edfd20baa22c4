//! The saga proper: checkout (order, coupon use, stock hold), payment, confirmation.

use super::*;

impl OrdersService {
    // --- 1. checkout ------------------------------------------------------------------------------

    /// Begins a checkout of the user's cart: PAYMENT_PENDING with every line held until
    /// `expires_at`. With an idempotency key, a retry finds (and returns) the same checkout.
    pub async fn checkout(&self, user: UserId, address: AddressId, key: Option<&str>) -> Result<Order> {
        match self.start_checkout(user, address, key).await? {
            Started::Recorded(order) => Ok(order),
            Started::Held(order, hold) => self.record_hold(order, hold).await,
        }
    }

    /// A checkout with its stock held, the hold not necessarily recorded on the order yet.
    async fn start_checkout(&self, user: UserId, address: AddressId, key: Option<&str>) -> Result<Started> {
        // A retry may be refused for what its first attempt did (that checkout emptied the cart,
        // or holds the last units): its key finds the first checkout. The key is looked up only
        // then, or when the new order's insert meets it, not ahead of every attempt.
        let refused = match self.begin_checkout(user, address, key).await {
            Err(refused @ (OrdersError::Invalid(_) | OrdersError::OutOfStock(_))) => refused,
            other => return other,
        };
        let Some(key) = key else { return Err(refused) };
        match store::order_by_key(&self.db, user, key).await? {
            Some(existing) => self.resume(existing).await.map(Started::Recorded),
            None => Err(refused),
        }
    }

    async fn begin_checkout(&self, user: UserId, address: AddressId, key: Option<&str>) -> Result<Started> {
        let address = self
            .clients
            .users
            .address(user, address)
            .await
            .map_err(dependency)?
            .ok_or_else(|| invalid("shipping_address_id", "is not one of your addresses"))?;
        let cart = self.clients.cart.cart(user).await.map_err(dependency)?;
        if cart.items.is_empty() {
            return Err(invalid("cart", "is empty: add products before checking out"));
        }
        // Short even counting every warehouse: no order, no hold to try. A sold-out flash sale
        // answers its crowd from this read alone; the reservation below stays the judge of
        // everything else (it also knows which warehouses deliver to the address).
        let short: Vec<Shortage> = cart
            .items
            .iter()
            .filter(|l| l.available < l.quantity)
            .map(|l| Shortage {
                product_id: l.product_id,
                requested: l.quantity,
                available: l.available.max(0),
                // The cart's figure counts every warehouse.
                reason: ShortageReason::OutOfStock,
            })
            .collect();
        if !short.is_empty() {
            return Err(OrdersError::OutOfStock(short));
        }
        let now = self.clock.now();
        let actor = user_actor(user);
        // Built as reading it back would show it: lines in product order, the creation in the
        // history (the saga answers with this order, not a re-read).
        let mut lines: Vec<OrderLine> = cart
            .items
            .iter()
            .map(|l| OrderLine {
                product_id: l.product_id,
                title: l.title.clone(),
                unit_price: l.unit_price,
                quantity: l.quantity,
                line_total: l.line_total,
                returned_quantity: 0,
            })
            .collect();
        lines.sort_by_key(|l| l.product_id);
        let order = Order {
            id: OrderId::new(),
            user_id: user,
            status: OrderStatus::Created,
            lines,
            subtotal: cart.subtotal,
            discount: cart.discount,
            total: cart.total,
            coupon_code: cart.coupon.as_ref().filter(|c| c.invalid_reason.is_none()).map(|c| c.code.clone()),
            shipping_address: ShippingAddress {
                address_id: address.id.to_string(),
                line1: address.line1.clone(),
                line2: address.line2.clone(),
                city: address.city.clone(),
                region: address.region.clone(),
                postal_code: address.postal_code.clone(),
                country: address.country.clone(),
                lat: address.lat.map(|l| l.degrees()),
                lon: address.lon.map(|l| l.degrees()),
            },
            reservation_id: None,
            expires_at: None,
            delivered_at: None,
            idempotency_key: key.map(str::to_owned),
            payment: None,
            settled: false,
            created_at: now,
            updated_at: now,
            history: vec![HistoryEntry { status: OrderStatus::Created, at: now, actor: actor.clone(), reason: None }],
            shipments: Vec::new(),
        };
        let mut tx = self.db.begin().await?;
        let inserted = async {
            store::insert_order(&mut tx, &order, &actor).await?;
            tx.commit().await
        };
        match inserted.await {
            Err(err) if is_unique_violation(&err) => {
                // The same key, concurrently: that request runs the checkout.
                let existing = store::order_by_key(&self.db, user, key.unwrap_or_default()).await?;
                return self.resume(existing.ok_or(OrdersError::NotFound)?).await.map(Started::Recorded);
            }
            other => other?,
        }
        let hold = self.take_hold(&order).await?;
        Ok(Started::Held(order, hold))
    }

    /// Takes the coupon use and the stock for a CREATED order (nothing recorded on it yet; a
    /// CREATED order's reservation is found by its reference, the order id). On failure the
    /// order is discarded.
    async fn take_hold(&self, order: &Order) -> Result<Hold> {
        let reference = order.id.to_string();
        if let Some(code) = &order.coupon_code
            && let Err(err) = self.clients.cart.redeem_coupon(code, order.user_id, &reference).await
        {
            self.discard(order).await?;
            return Err(match err {
                CartError::CouponRejected { reason } => invalid("coupon", reason),
                CartError::CouponNotFound => invalid("coupon", "no longer exists"),
                other => dependency(other),
            });
        }
        let request = ReserveRequest {
            reference: reference.clone(),
            lines: order
                .lines
                .iter()
                .map(|l| LineRequest {
                    product_id: l.product_id,
                    quantity: Quantity::parse(l.quantity).expect("cart quantities are valid"),
                })
                .collect(),
            destination: destination(&order.shipping_address),
            // The inventory's configured hold (`reservation_ttl_secs`) is the payment deadline.
            ttl: None,
        };
        let reservation = match self.clients.inventory.reserve("orders", request).await {
            Ok(r) => r,
            Err(err) => {
                self.discard(order).await?;
                return Err(match err {
                    InventoryError::OutOfStock { lines } => OrdersError::OutOfStock(lines),
                    other => dependency(other),
                });
            }
        };
        metrics::counter!("orders_checkouts_total").increment(1);
        Ok(Hold { reservation: reservation.id, expires_at: reservation.expires_at, at: self.clock.now() })
    }

    /// Records a CREATED order's hold: PAYMENT_PENDING until the hold's end.
    async fn record_hold(&self, mut order: Order, hold: Hold) -> Result<Order> {
        let mut tx = self.db.begin().await?;
        let to = OrderStatus::PaymentPending;
        let t = Transition { id: order.id, from: OrderStatus::Created, to, actor: ACTOR, reason: None, at: hold.at };
        append_change(&mut tx, change_of(&order, to, None)).await?;
        if !store::commit_transition(tx, &t, Recording::Hold(hold)).await? {
            // A concurrent retry (or the worker, adopting it) moved it first: report it as it stands.
            return self.load(order.id).await;
        }
        // As stored now; re-reading four tables per step was a large part of a checkout's cost.
        order.reservation_id = Some(hold.reservation);
        order.expires_at = Some(hold.expires_at);
        record(&mut order, &t);
        Ok(order)
    }

    /// A checkout found again by its key: CREATED ones are held now (the reservation, if its
    /// first attempt made one, is found by its reference), others are as they are.
    async fn resume(&self, order: Order) -> Result<Order> {
        if order.status != OrderStatus::Created {
            return Ok(order);
        }
        let hold = self.take_hold(&order).await?;
        self.record_hold(order, hold).await
    }

    /// A CREATED order whose checkout died (or is slow) after holding its stock: records the
    /// hold it took, so the payment and expiry machinery finish it like any unpaid checkout.
    /// Harmless to a checkout still running: its own recording then finds the order moved on.
    /// An order without a hold is returned as it is.
    pub(super) async fn adopt_hold(&self, order: Order) -> Result<Order> {
        let reference = order.id.to_string();
        let Some(reservation) =
            self.clients.inventory.reservation_by_reference(&reference).await.map_err(dependency)?
        else {
            return Ok(order);
        };
        let hold = Hold { reservation: reservation.id, expires_at: reservation.expires_at, at: self.clock.now() };
        self.record_hold(order, hold).await
    }

    /// Gives back what a CREATED order took and removes it (no stock could be held).
    async fn discard(&self, order: &Order) -> Result<()> {
        self.clients.cart.release_coupon(&order.id.to_string()).await.map_err(dependency)?;
        let mut tx = self.db.begin().await?;
        store::discard_created(&mut tx, order.id).await?;
        tx.commit().await?;
        Ok(())
    }

    // --- 2. pay -----------------------------------------------------------------------------------

    /// Checkout and pay in one call (`POST /orders`).
    pub async fn place_order(
        &self,
        user: UserId,
        address: AddressId,
        token: &str,
        key: Option<&str>,
    ) -> Result<PayOutcome> {
        // A token that may not be charged is refused before anything is held.
        self.check_token(token).await?;
        let (order, hold) = match self.start_checkout(user, address, key).await? {
            Started::Held(order, hold) => (order, hold),
            Started::Recorded(order) => {
                self.failpoint(Failpoint::AfterReserve).await;
                return match order.status {
                    OrderStatus::PaymentPending => self.pay_order(order, None, token).await,
                    // A retried request whose order already moved on: report it as it stands.
                    OrderStatus::PaymentFailed => {
                        let reason =
                            order.history.last().and_then(|h| h.reason.clone()).unwrap_or_else(|| "declined".into());
                        Err(OrdersError::PaymentDeclined { order: Box::new(order), reason })
                    }
                    _ => Ok(PayOutcome { order, pending: false }),
                };
            }
        };
        // Died here, the order stays CREATED with its stock held: the worker adopts the hold.
        self.failpoint(Failpoint::AfterReserve).await;
        self.pay_order(order, Some(hold), token).await
    }

    pub async fn pay(&self, caller: Caller, id: OrderId, token: &str) -> Result<PayOutcome> {
        self.check_token(token).await?;
        let order = self.order_to_change(&caller, id).await?;
        self.pay_order(order, None, token).await
    }

    async fn check_token(&self, token: &str) -> Result<()> {
        self.clients.payments.check_token(token).await.map_err(|err| match err {
            PaymentsError::Invalid { fields } => OrdersError::Invalid(fields),
            other => dependency(other),
        })
    }

    /// Pays a PAYMENT_PENDING order, or a CREATED one with its `hold` just taken and not yet
    /// recorded: a captured payment then records hold and payment in one commit (CREATED →
    /// CONFIRMED, the PAYMENT_PENDING step in the history too); any other outcome records the
    /// hold first and goes on as for a PAYMENT_PENDING order.
    async fn pay_order(&self, order: Order, hold: Option<Hold>, token: &str) -> Result<PayOutcome> {
        let id = order.id;
        let (order, hold) = match hold {
            // Nothing to charge: recorded now, then confirmed as a recorded checkout is.
            Some(hold) if order.total.amount == 0 => (self.record_hold(order, hold).await?, None),
            hold => (order, hold),
        };
        if hold.is_none() {
            if order.status != OrderStatus::PaymentPending {
                check_transition(order.status, OrderStatus::Confirmed)?;
            }
            if order.expires_at.is_some_and(|at| at <= self.clock.now()) {
                self.expire(id).await?;
                return Err(OrdersError::CheckoutExpired);
            }
            if order.total.amount == 0 {
                // Fully discounted: nothing to charge.
                self.confirm(id).await?;
                return Ok(PayOutcome { order: self.load(id).await?, pending: false });
            }
        }
        let request = PayRequest {
            reference: id.to_string(),
            idempotency_key: payment_key(id),
            amount: order.total,
            token: token.to_owned(),
        };
        // Held until this call returns: the payment's event waits for it (see `in_flight`).
        let paying = self.pays.begin(id);
        let paid = self.clients.payments.pay(request).await;
        let payment = match paid {
            Ok(payment) => payment,
            Err(err) => {
                if let Some(hold) = hold {
                    self.record_hold(order, hold).await?;
                }
                return Err(match err {
                    PaymentsError::Invalid { fields } => OrdersError::Invalid(fields),
                    other => dependency(other),
                });
            }
        };
        if self.failpoint == Some(Failpoint::AfterPay) {
            // A process that died here would leave no mark behind.
            drop(paying);
            self.failpoint(Failpoint::AfterPay).await;
            unreachable!("a failpoint that is set never returns");
        }
        let order = match payment.status {
            PaymentStatus::Captured => {
                let order = self.confirm_order(order, Some((&summary(&payment), hold))).await?;
                if order.status == OrderStatus::Confirmed {
                    paying.confirmed(payment.id);
                }
                order
            }
            _ => {
                if let Some(hold) = hold {
                    self.record_hold(order, hold).await?;
                }
                self.apply_payment(id, &payment).await?;
                self.load(id).await?
            }
        };
        match (order.status, payment.status) {
            (OrderStatus::PaymentFailed, _) => {
                let reason = payment.failure_reason.unwrap_or_else(|| "declined".into());
                Err(OrdersError::PaymentDeclined { order: Box::new(order), reason })
            }
            (OrderStatus::Expired, _) => Err(OrdersError::CheckoutExpired),
            (_, status) => Ok(PayOutcome { order, pending: status.is_unresolved() }),
        }
    }

    /// Moves the order on from what its payment says.
    async fn apply_payment(&self, id: OrderId, payment: &Payment) -> Result<()> {
        store::set_payment(&self.db, id, &summary(payment)).await?;
        match payment.status {
            PaymentStatus::Captured => self.confirm(id).await,
            PaymentStatus::Failed => {
                let order = self.load(id).await?;
                if order.status == OrderStatus::PaymentPending {
                    let reason = payment.failure_reason.as_deref().unwrap_or("declined");
                    self.change(&order, OrderStatus::PaymentFailed, ACTOR, Some(reason)).await?;
                    self.settle(id).await?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The payment of `id` changed outside the pay call (webhook, resolved timeout), or its
    /// event followed the pay call; `succeeded` is the payment a PaymentSucceeded event names.
    pub async fn payment_changed(&self, id: OrderId, succeeded: Option<PaymentId>) -> Result<()> {
        let confirmed_with = self.pays.wait_for(id, PAY_CALL_WAIT).await;
        if succeeded.is_some() && confirmed_with == succeeded {
            // The pay call this event came from confirmed the order with this very payment.
            return Ok(());
        }
        let Some((status, recorded)) = store::status_and_payment(&self.db, id).await? else { return Ok(()) };
        let Some(payment) = self.clients.payments.current(&id.to_string()).await.map_err(dependency)? else {
            return Ok(());
        };
        // Usually the pay call already recorded exactly this and moved the order on (the event
        // follows every capture): then there is nothing to do, and no need to read the order whole.
        let moved_on = status != OrderStatus::PaymentPending && !status.needs_settling();
        if moved_on && recorded.as_ref() == Some(&summary(&payment)) {
            return Ok(());
        }
        let Some(order) = store::order(&self.db, id).await? else { return Ok(()) };
        // Paid in a call that died (or is still running, slowly) before recording its hold.
        let order = if order.status == OrderStatus::Created { self.adopt_hold(order).await? } else { order };
        match order.status {
            OrderStatus::PaymentPending => self.apply_payment(id, &payment).await,
            // A success for an order that is gone: give the money back.
            s if s.needs_settling() && payment.status.was_charged() => {
                store::set_payment(&self.db, id, &summary(&payment)).await?;
                self.refund_all(&order, "the order was already closed when the payment succeeded").await
            }
            // Usually the pay call already recorded exactly this (the event follows every capture).
            _ if order.payment.as_ref() == Some(&summary(&payment)) => Ok(()),
            _ => Ok(store::set_payment(&self.db, id, &summary(&payment)).await?),
        }
    }

    /// A refund of the order's payment (an operator's, or the order's own): the order's payment
    /// record takes the payment's status and refunded amount; nothing else changes.
    pub async fn payment_refunded(&self, id: OrderId) -> Result<()> {
        let Some((_, recorded)) = store::status_and_payment(&self.db, id).await? else { return Ok(()) };
        let Some(payment) = self.clients.payments.current(&id.to_string()).await.map_err(dependency)? else {
            return Ok(());
        };
        let now = summary(&payment);
        if recorded.as_ref() != Some(&now) {
            store::set_payment(&self.db, id, &now).await?;
        }
        Ok(())
    }

    // --- 3. confirm -------------------------------------------------------------------------------

    pub(super) async fn confirm(&self, id: OrderId) -> Result<()> {
        let order = self.load(id).await?;
        self.confirm_order(order, None).await.map(|_| ())
    }

    /// Confirms a PAYMENT_PENDING order, or a CREATED one whose payment comes with its
    /// unrecorded hold (`paid`: the payment to record with the change, and that hold), and
    /// returns it as it then stands; orders in any other state are reloaded and returned as
    /// they are.
    async fn confirm_order(&self, mut order: Order, paid: Option<(&PaymentSummary, Option<Hold>)>) -> Result<Order> {
        let id = order.id;
        let payment = paid.map(|(payment, _)| payment);
        let hold = paid.and_then(|(_, hold)| hold);
        debug_assert!(
            hold.is_none() || order.status == OrderStatus::Created,
            "only a CREATED order's hold is unrecorded"
        );
        if order.status != OrderStatus::PaymentPending && hold.is_none() {
            if let Some(payment) = payment {
                store::set_payment(&self.db, id, payment).await?;
            }
            return self.load(id).await;
        }
        let reservation = hold
            .map(|h| h.reservation)
            .or(order.reservation_id)
            .ok_or_else(|| OrdersError::Conflict("the order holds no stock".into()))?;
        let allocations: Vec<Allocation> = match self.clients.inventory.commit("orders", reservation).await {
            Ok(committed) => committed
                .lines
                .iter()
                .map(|l| Allocation { product_id: l.product_id, warehouse_id: l.warehouse_id, quantity: l.quantity })
                .collect(),
            Err(InventoryError::ReservationExpired | InventoryError::ReservationReleased) => {
                if let Some(hold) = hold {
                    order = self.record_hold(order, hold).await?;
                }
                if let Some(payment) = payment {
                    store::set_payment(&self.db, id, payment).await?;
                }
                // Paid too late: the stock went back on sale. Expire and refund.
                self.change(&order, OrderStatus::Expired, ACTOR, Some("paid after the stock hold expired")).await?;
                self.settle(id).await?;
                return self.load(id).await;
            }
            Err(err) => return Err(dependency(err)),
        };
        let products: Vec<ProductId> = order.lines.iter().map(|l| l.product_id).collect();
        if let Err(err) = self.clients.cart.remove_products(order.user_id, &products).await {
            tracing::warn!(error = %err, order = %id, "could not take ordered lines out of the cart");
        }
        let to = OrderStatus::Confirmed;
        let mut tx = self.db.begin().await?;
        let t = Transition { id, from: order.status, to, actor: ACTOR, reason: None, at: self.clock.now() };
        let confirmed = OrderChange { allocations, ..change_of(&order, to, None) };
        let recording = match paid {
            Some((payment, Some(hold))) => {
                // Placed and paid at once: its OrderPlaced goes out with the confirmation.
                let placed = change_of(&order, OrderStatus::PaymentPending, None);
                append_changes(&mut tx, vec![placed, confirmed]).await?;
                Recording::HoldAndPayment(hold, payment)
            }
            _ => {
                append_change(&mut tx, confirmed).await?;
                payment.map_or(Recording::StatusOnly, Recording::Payment)
            }
        };
        if !store::commit_transition(tx, &t, recording).await? {
            if let Some(payment) = payment {
                store::set_payment(&self.db, id, payment).await?;
            }
            let now = self.load(id).await?;
            // The hold was adopted meanwhile (the worker, or this payment's event after a slow
            // call): confirm it as recorded. Otherwise a concurrent confirmation or expiry moved
            // it on: the payment is still a fact.
            if hold.is_some() && now.status == OrderStatus::PaymentPending {
                return Box::pin(self.confirm_order(now, payment.map(|p| (p, None)))).await;
            }
            return Ok(now);
        }
        metrics::counter!("orders_transitions_total", "to" => to.as_str()).increment(1);
        metrics::counter!("orders_confirmed_total").increment(1);
        if let Some(payment) = payment {
            order.payment = Some(payment.clone());
        }
        if let Some(hold) = hold {
            order.reservation_id = Some(hold.reservation);
            order.expires_at = Some(hold.expires_at);
            let placed = Transition { from: OrderStatus::Created, to: OrderStatus::PaymentPending, at: hold.at, ..t };
            record(&mut order, &placed);
        }
        record(&mut order, &t);
        Ok(order)
    }

    /// Splits a confirmed order into one warehouse order per warehouse holding its stock.
    pub async fn assign_warehouses(&self, id: OrderId) -> Result<()> {
        let order = self.load(id).await?;
        if order.status != OrderStatus::Confirmed {
            return Ok(());
        }
        self.split_confirmed(&change_of(&order, OrderStatus::Confirmed, None)).await
    }

    /// [`assign_warehouses`](Self::assign_warehouses) for an order as its `OrderConfirmed` event
    /// describes it: the event carries all the split needs from the order, and usually where its
    /// units are allocated, so neither the order nor its reservation is read again. Does nothing
    /// if the order has moved on (the transition is conditional).
    pub async fn split_confirmed(&self, confirmed: &OrderChange) -> Result<()> {
        let id = confirmed.order_id;
        let placements: Vec<_> = if confirmed.allocations.is_empty() {
            let reservation = self
                .clients
                .inventory
                .reservation_by_reference(&id.to_string())
                .await
                .map_err(dependency)?
                .ok_or_else(|| OrdersError::Conflict("no reservation".into()))?;
            reservation.lines.iter().map(|l| (l.product_id, l.warehouse_id, l.quantity)).collect()
        } else {
            confirmed.allocations.iter().map(|a| (a.product_id, a.warehouse_id, a.quantity)).collect()
        };
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        let t = Transition {
            id,
            from: OrderStatus::Confirmed,
            to: OrderStatus::Processing,
            actor: "system:warehouse-assignment",
            reason: None,
            at: now,
        };
        for (warehouse_id, lines) in split_by_warehouse(&placements) {
            let shipment = WarehouseOrder {
                id: WarehouseOrderId::new(),
                order_id: id,
                warehouse_id,
                status: ShipmentStatus::Pending,
                lines,
                shipped_at: None,
                delivered_at: None,
                created_at: now,
                delivery_partner_id: None,
            };
            store::insert_shipment(&mut tx, &shipment).await?;
        }
        let processing =
            OrderChange { status: OrderStatus::Processing, reason: None, allocations: Vec::new(), ..confirmed.clone() };
        append_change(&mut tx, processing).await?;
        // Moved on meanwhile (cancelled, or split by another worker): nothing of this stays. On
        // PostgreSQL a split committed meanwhile can surface as its warehouse orders' unique key
        // instead (the inserts run beside the guard, see `Tx::commit_if`): the same outcome.
        match store::commit_transition(tx, &t, Recording::StatusOnly).await {
            Err(err) if is_unique_violation(&err) => Ok(()),
            other => other.map(|_| ()).map_err(Into::into),
        }
    }
}
