//! Demo data for `serve --demo`: accounts a visitor can sign in with at once. Idempotent, so
//! restarting the demo keeps the same shop: accounts, products, warehouses and stock.

use crate::app::App;
use anyhow::Context;
use emporium_delivery::DeliveryService;
use emporium_delivery::service::NewPartner;
use emporium_inventory::InventoryService;
use emporium_inventory::service::NewWarehouse;
use emporium_kernel::auth::Role;
use emporium_kernel::geo::GeoPoint;
use emporium_users::UsersService;
use emporium_users::model::{AddressInput, Email, Password, PersonName, User};
use emporium_users::service::Error as UsersError;
use emporium_users::service::Registration;
use std::sync::Arc;

pub const DEMO_ADMIN: (&str, &str) = ("admin@demo.emporium.dev", "demo-admin-pass");
pub const DEMO_CUSTOMER: (&str, &str) = ("shopper@demo.emporium.dev", "demo-shopper-pass");
/// Enough to make search, facets and pagination interesting, small enough to seed in seconds.
const DEMO_PRODUCTS: u64 = 3_000;

pub async fn seed(app: &App) -> anyhow::Result<()> {
    let Some(users) = app.users_service() else {
        return Ok(());
    };
    create_admin(users, DEMO_ADMIN.0, DEMO_ADMIN.1, "Demo Admin").await?;
    let customer = registration(DEMO_CUSTOMER.0, DEMO_CUSTOMER.1, "Demo Shopper")?;
    match users.create_user(customer, vec![Role::Customer]).await {
        Ok(session) => give_berlin_address(users, &session.user).await?,
        Err(UsersError::EmailTaken) => {}
        Err(err) => return Err(err).context("seeding the demo customer"),
    }
    if let Some(catalog) = app.catalog_service()
        && catalog.count_products().await? == 0
    {
        let total = crate::seed::load::seed_products(app, DEMO_PRODUCTS).await?;
        println!("Seeded {total} demo products (search indexes them from the catalog's events).");
    }
    if let Some(inventory) = app.inventory_service()
        && inventory.warehouses().await?.is_empty()
    {
        let stocked = seed_stock(app, inventory).await?;
        println!("Stocked {stocked} demo products in 3 warehouses (Berlin, Hamburg, Munich).");
    }
    if let Some(delivery) = app.delivery_service()
        && delivery.partners().await?.is_empty()
    {
        seed_partners(delivery).await?;
        println!("Added 3 demo delivery partners (one around each warehouse).");
    }
    println!("Demo accounts (password after the slash):");
    println!("  admin     {} / {}", DEMO_ADMIN.0, DEMO_ADMIN.1);
    println!("  customer  {} / {}", DEMO_CUSTOMER.0, DEMO_CUSTOMER.1);
    println!("  seller    {} / {}", crate::seed::load::DEMO_SELLER.0, crate::seed::load::DEMO_SELLER.1);
    Ok(())
}

/// Three German warehouses and deterministic stock: most products in one or two of them, every
/// tenth sold out, so search shows in-stock, low-stock and sold-out products and deliverability
/// depends on where the shopper is.
async fn seed_stock(app: &App, inventory: &Arc<InventoryService>) -> anyhow::Result<usize> {
    let catalog = app.catalog.as_ref().context("stocking needs the catalog")?;
    let mut warehouses = Vec::new();
    for (name, lat, lon, prefix) in
        [("Berlin", 52.52, 13.405, "1"), ("Hamburg", 53.55, 9.99, "2"), ("Munich", 48.14, 11.58, "8")]
    {
        let warehouse = inventory
            .create_warehouse(NewWarehouse {
                name: format!("{name} fulfilment centre"),
                address: format!("1 Lagerstraße, {name}"),
                location: GeoPoint::new(lat, lon).map_err(anyhow::Error::msg)?,
                delivery_radius_km: 150.0,
                postal_prefixes: vec![prefix.to_owned()],
            })
            .await?;
        warehouses.push(warehouse.id);
    }
    let mut after = None;
    let mut index = 0usize;
    let mut stocked = 0;
    loop {
        let batch = catalog.products_batch(after, 500).await?;
        let Some(last) = batch.last() else { break };
        after = Some(last.id);
        for product in batch {
            index += 1;
            if index.is_multiple_of(10) {
                continue;
            }
            let units = (index * 7 % 40 + 1) as i64;
            let home = warehouses[index % warehouses.len()];
            inventory.intake("system:demo", home, product.id, units, Some("demo stock")).await?;
            if index.is_multiple_of(3) {
                let second = warehouses[(index + 1) % warehouses.len()];
                inventory.intake("system:demo", second, product.id, units / 2 + 1, Some("demo stock")).await?;
            }
            stocked += 1;
        }
    }
    Ok(stocked)
}

/// The demo shopper lives in Berlin, so search, the cart and checkout show what can reach them.
async fn give_berlin_address(users: &UsersService, user: &User) -> anyhow::Result<()> {
    let address = AddressInput {
        label: Some("Home".into()),
        line1: "Invalidenstraße 1".into(),
        line2: None,
        city: "Berlin".into(),
        region: None,
        postal_code: "10115".into(),
        country: "DE".into(),
        location: Some(GeoPoint::new(52.53, 13.38).map_err(anyhow::Error::msg)?),
        is_default: true,
    };
    users.add_address(user.id, address).await.context("seeding the demo shopper's address")?;
    Ok(())
}

/// A courier around each demo warehouse, reaching what that warehouse delivers to.
async fn seed_partners(delivery: &DeliveryService) -> anyhow::Result<()> {
    for (name, lat, lon, prefix) in [
        ("Spree Kurier", 52.52, 13.405, "1"),
        ("Elbe Express", 53.55, 9.99, "2"),
        ("Isar Lieferdienst", 48.14, 11.58, "8"),
    ] {
        delivery
            .create_partner(NewPartner {
                name: name.to_owned(),
                email: None,
                phone: None,
                base: GeoPoint::new(lat, lon).map_err(anyhow::Error::msg)?,
                radius_km: 150.0,
                postal_prefixes: vec![prefix.to_owned()],
                capacity: 50,
                max_units: 20,
            })
            .await?;
    }
    Ok(())
}

pub async fn create_admin(
    users: &Arc<UsersService>,
    email: &str,
    password: &str,
    name: &str,
) -> anyhow::Result<(User, bool)> {
    let registration = registration(email, password, name)?;
    users.ensure_admin(registration).await.context("creating the administrator")
}

fn registration(email: &str, password: &str, name: &str) -> anyhow::Result<Registration> {
    Ok(Registration {
        email: Email::parse(email).map_err(|m| anyhow::anyhow!("--email {m}"))?,
        password: Password::parse(password).map_err(|m| anyhow::anyhow!("--password {m}"))?,
        name: PersonName::parse(name).map_err(|m| anyhow::anyhow!("--name {m}"))?,
    })
}
