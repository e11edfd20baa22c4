//! After confirmation: warehouse orders shipped and delivered, cancel and return, and giving
//! back what a closed order held (stock, coupon use, money).

use super::*;

impl OrdersService {
    // --- 4. fulfilment ----------------------------------------------------------------------------

    /// A warehouse's orders, oldest first, with their addresses and line titles.
    pub async fn shipments(
        &self,
        warehouse: WarehouseId,
        status: Option<ShipmentStatus>,
        after: Option<WarehouseOrderId>,
        limit: usize,
    ) -> Result<Vec<PickList>> {
        Ok(store::shipments_for(&self.db, warehouse, status, after, limit as i64).await?)
    }

    /// A warehouse hands its part to the carrier: stock leaves (allocated and on_hand down).
    /// Outside `scope` the warehouse order is not found.
    pub async fn ship(&self, actor: &str, scope: &WarehouseScope, id: WarehouseOrderId) -> Result<WarehouseOrder> {
        let shipment = store::shipment(&self.db, id).await?.ok_or(OrdersError::ShipmentNotFound)?;
        if !scope.allows(shipment.warehouse_id) {
            return Err(OrdersError::ShipmentNotFound);
        }
        let order = self.load(shipment.order_id).await?;
        match shipment.status {
            ShipmentStatus::Pending => {
                if order.status != OrderStatus::Processing {
                    check_transition(order.status, OrderStatus::Shipped)?;
                }
                let now = self.clock.now();
                let mut tx = self.db.begin().await?;
                store::lock_order(&mut tx, order.id).await?;
                if !store::change_shipment(&mut tx, id, ShipmentStatus::Pending, ShipmentStatus::Shipped, now).await? {
                    return Err(OrdersError::Conflict("the warehouse order changed meanwhile (cancelled?)".into()));
                }
                let event = WarehouseOrderShipped {
                    warehouse_order_id: id,
                    order_id: order.id,
                    warehouse_id: shipment.warehouse_id,
                    lines: shipment.lines.clone(),
                };
                events::append(&mut tx, &event).await?;
                let statuses: Vec<_> =
                    store::shipments_of_in_tx(&mut tx, order.id).await?.into_iter().map(|s| s.status).collect();
                if parent_status(&statuses) == Some(OrderStatus::Shipped) {
                    let t = Transition {
                        id: order.id,
                        from: order.status,
                        to: OrderStatus::Shipped,
                        actor,
                        reason: None,
                        at: now,
                    };
                    if !store::transition(&mut tx, &t).await? {
                        return Err(OrdersError::Conflict("the order changed meanwhile; retry".into()));
                    }
                    append_change(&mut tx, change_of(&order, OrderStatus::Shipped, None)).await?;
                }
                tx.commit().await?;
            }
            // Shipping again only makes sure the stock movement happened.
            ShipmentStatus::Shipped | ShipmentStatus::Delivered => {}
            ShipmentStatus::Cancelled => return Err(OrdersError::Conflict("the warehouse order was cancelled".into())),
        }
        let reservation = order.reservation_id.ok_or_else(|| OrdersError::Conflict("no reservation".into()))?;
        self.clients.inventory.ship("orders", reservation, shipment.warehouse_id).await.map_err(dependency)?;
        store::shipment(&self.db, id).await?.ok_or(OrdersError::ShipmentNotFound)
    }

    /// The carrier handed the part over. Outside `scope` the warehouse order is not found.
    pub async fn deliver(&self, actor: &str, scope: &WarehouseScope, id: WarehouseOrderId) -> Result<WarehouseOrder> {
        let shipment = store::shipment(&self.db, id).await?.ok_or(OrdersError::ShipmentNotFound)?;
        if !scope.allows(shipment.warehouse_id) {
            return Err(OrdersError::ShipmentNotFound);
        }
        match shipment.status {
            ShipmentStatus::Delivered => return Ok(shipment),
            ShipmentStatus::Shipped => {}
            other => {
                return Err(OrdersError::Conflict(format!("a {} warehouse order cannot be delivered", other.as_str())));
            }
        }
        let order = self.load(shipment.order_id).await?;
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        store::lock_order(&mut tx, order.id).await?;
        if !store::change_shipment(&mut tx, id, ShipmentStatus::Shipped, ShipmentStatus::Delivered, now).await? {
            return Err(OrdersError::Conflict("the warehouse order changed meanwhile; retry".into()));
        }
        let event =
            WarehouseOrderDelivered { warehouse_order_id: id, order_id: order.id, warehouse_id: shipment.warehouse_id };
        events::append(&mut tx, &event).await?;
        let statuses: Vec<_> =
            store::shipments_of_in_tx(&mut tx, order.id).await?.into_iter().map(|s| s.status).collect();
        if parent_status(&statuses) == Some(OrderStatus::Delivered) && order.status == OrderStatus::Shipped {
            let t = Transition {
                id: order.id,
                from: OrderStatus::Shipped,
                to: OrderStatus::Delivered,
                actor,
                reason: None,
                at: now,
            };
            if store::transition(&mut tx, &t).await? {
                store::set_delivered_at(&mut tx, order.id, now).await?;
                append_change(&mut tx, change_of(&order, OrderStatus::Delivered, None)).await?;
            }
        }
        tx.commit().await?;
        store::shipment(&self.db, id).await?.ok_or(OrdersError::ShipmentNotFound)
    }

    // --- cancel and return ------------------------------------------------------------------------

    /// Cancels until SHIPPED: stock back (released or deallocated), coupon use back, refund.
    pub async fn cancel(&self, caller: Caller, id: OrderId, reason: Option<&str>) -> Result<Order> {
        let mut order = self.order_to_change(&caller, id).await?;
        let actor = user_actor(caller.user);
        let reason = reason.unwrap_or("cancelled by the customer");
        // The warehouse assignment moves a fresh order CONFIRMED → PROCESSING in the background;
        // losing that race is no reason to refuse the shopper, so look again and retry. Each
        // lost race means the order moved forward, which only a few steps can do.
        let mut attempts = 0;
        let (mut tx, now) = loop {
            if order.status == OrderStatus::Cancelled {
                return Ok(order);
            }
            check_transition(order.status, OrderStatus::Cancelled)?;
            let now = self.clock.now();
            let mut tx = self.db.begin().await?;
            let t = Transition {
                id,
                from: order.status,
                to: OrderStatus::Cancelled,
                actor: &actor,
                reason: Some(reason),
                at: now,
            };
            if store::transition(&mut tx, &t).await? {
                break (tx, now);
            }
            drop(tx);
            attempts += 1;
            if attempts == 5 {
                return Err(OrdersError::Conflict("the order keeps changing; retry".into()));
            }
            order = self.load(id).await?;
        };
        store::cancel_pending_shipments(&mut tx, id, now).await?;
        // A warehouse that shipped concurrently wins: then it is too late to cancel.
        if store::shipments_of_in_tx(&mut tx, id).await?.iter().any(|s| s.status != ShipmentStatus::Cancelled) {
            tx.rollback().await?;
            return Err(
                IllegalTransition { from: OrderStatus::Shipped.as_str(), to: OrderStatus::Cancelled.as_str() }.into()
            );
        }
        append_change(&mut tx, change_of(&order, OrderStatus::Cancelled, Some(reason))).await?;
        tx.commit().await?;
        self.settle(id).await?;
        self.load(id).await
    }

    /// Returns delivered goods within the window: refund their share of what was paid and
    /// restock them (per line, default from settings). `lines` empty = everything.
    pub async fn return_order(
        &self,
        caller: Caller,
        id: OrderId,
        lines: Vec<(ProductId, i64, Option<bool>)>,
        reason: Option<&str>,
    ) -> Result<Order> {
        let order = self.order_to_change(&caller, id).await?;
        check_transition(order.status, OrderStatus::Returned)?;
        let delivered_at = order.delivered_at.unwrap_or(order.updated_at);
        return_window_open(delivered_at, self.settings.return_window, self.clock.now())?;
        let lines: Vec<(ProductId, i64, bool)> = if lines.is_empty() {
            order
                .lines
                .iter()
                .map(|l| (l.product_id, l.quantity - l.returned_quantity, self.settings.restock_returns))
                .collect()
        } else {
            lines.into_iter().map(|(p, q, r)| (p, q, r.unwrap_or(self.settings.restock_returns))).collect()
        };
        let pairs: Vec<(ProductId, i64)> = lines.iter().map(|(p, q, _)| (*p, *q)).collect();
        refund_for_return(&order, &pairs)?;
        let actor = user_actor(caller.user);
        let reason = reason.unwrap_or("returned by the customer");
        let mut tx = self.db.begin().await?;
        let t = Transition {
            id,
            from: OrderStatus::Delivered,
            to: OrderStatus::Returned,
            actor: &actor,
            reason: Some(reason),
            at: self.clock.now(),
        };
        if !store::transition(&mut tx, &t).await? {
            return Err(OrdersError::Conflict("the order changed meanwhile; retry".into()));
        }
        for (product, quantity, restock) in &lines {
            store::record_return(&mut tx, id, *product, *quantity, *restock).await?;
        }
        append_change(&mut tx, change_of(&order, OrderStatus::Returned, Some(reason))).await?;
        tx.commit().await?;
        self.settle(id).await?;
        self.load(id).await
    }

    // --- giving back ------------------------------------------------------------------------------

    /// Performs the compensations of an order in a giving-back state, then marks it settled.
    /// Every step is idempotent (release twice is harmless, refunds are keyed).
    pub(super) async fn settle(&self, id: OrderId) -> Result<()> {
        let order = self.load(id).await?;
        if order.settled || !order.status.needs_settling() {
            return Ok(());
        }
        let now = self.clock.now();
        let lease = now + chrono::Duration::from_std(SETTLE_LEASE).expect("small");
        if !store::lease_settlement(&self.db, id, now, lease).await? {
            return Ok(()); // being settled by someone else right now
        }
        let reference = id.to_string();
        if order.status == OrderStatus::Returned {
            self.restock_returns(&order).await?;
            let amount = refund_due_for_returns(&order);
            if amount > 0 {
                self.refund(&order, Some(amount), "returned", "return").await?;
            }
        } else {
            let reservation = match order.reservation_id {
                Some(id) => Some(id),
                None => {
                    self.clients.inventory.reservation_by_reference(&reference).await.map_err(dependency)?.map(|r| r.id)
                }
            };
            if let Some(reservation) = reservation {
                let why = format!("order {}", order.status.as_str().to_ascii_lowercase());
                self.clients.inventory.release("orders", reservation, Some(&why)).await.map_err(dependency)?;
            }
            self.clients.cart.release_coupon(&reference).await.map_err(dependency)?;
            // An unresolved payment is given up on; if it was charged after all, refund it.
            self.clients.payments.give_up(&reference).await.map_err(dependency)?;
            self.refund_all(&order, &format!("order {}", order.status.as_str().to_ascii_lowercase())).await?;
        }
        store::mark_settled(&self.db, id).await?;
        Ok(())
    }

    /// Refunds whatever of the order's payment was charged and not yet given back.
    pub(super) async fn refund_all(&self, order: &Order, reason: &str) -> Result<()> {
        self.refund(order, None, reason, "all").await
    }

    async fn refund(&self, order: &Order, amount: Option<i64>, reason: &str, kind: &str) -> Result<()> {
        let reference = order.id.to_string();
        let Some(payment) = self.clients.payments.current(&reference).await.map_err(dependency)? else { return Ok(()) };
        let left = payment.amount.amount - payment.refunded;
        if !payment.status.was_charged() || left == 0 {
            return Ok(store::set_payment(&self.db, order.id, &summary(&payment)).await?);
        }
        let amount = amount.map(|a| a.min(left));
        let key = format!("order:{}:refund-{kind}", order.id);
        let request = RefundRequest { reference, amount, reason: reason.to_owned(), key };
        let payment = self.clients.payments.refund(request).await.map_err(dependency)?;
        store::set_payment(&self.db, order.id, &summary(&payment)).await?;
        Ok(())
    }

    /// Puts returned units back in the warehouses that shipped them.
    async fn restock_returns(&self, order: &Order) -> Result<()> {
        for (product, mut quantity) in store::restock_lines(&self.db, order.id).await? {
            for shipment in &order.shipments {
                let Some(line) = shipment.lines.iter().find(|l| l.product_id == product) else { continue };
                let take = quantity.min(line.quantity);
                if take == 0 {
                    continue;
                }
                let reason = format!("return of order {}", order.id);
                // An order is returned once, so this names the movement: a settlement retried
                // after a crash finds it done instead of restocking twice.
                let key = format!("return:{}:{product}:{}", order.id, shipment.warehouse_id);
                let request = RestockRequest {
                    warehouse: shipment.warehouse_id,
                    product,
                    quantity: take,
                    reason,
                    operation_key: key,
                };
                self.clients.inventory.restock("orders", request).await.map_err(dependency)?;
                quantity -= take;
            }
        }
        Ok(())
    }
}
