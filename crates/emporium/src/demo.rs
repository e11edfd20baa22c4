//! Demo data for `serve --demo`: accounts a visitor can sign in with at once. Idempotent, so
//! restarting the demo keeps the same shop. Later services add their own demo data here.

use crate::app::App;
use anyhow::Context;
use emporium_kernel::auth::Role;
use emporium_users::model::{Email, Password, PersonName, User};
use emporium_users::service::Registration;
use emporium_users::{UsersError, UsersService};
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
        Ok(_) | Err(UsersError::EmailTaken) => {}
        Err(err) => return Err(err).context("seeding the demo customer"),
    }
    if let Some(catalog) = app.catalog_service()
        && catalog.count_products().await? == 0
    {
        let total = crate::seed::load::seed_products(app, DEMO_PRODUCTS).await?;
        println!("Seeded {total} demo products (search indexes them from the catalog's events).");
    }
    println!("Demo accounts (password after the slash):");
    println!("  admin     {} / {}", DEMO_ADMIN.0, DEMO_ADMIN.1);
    println!("  customer  {} / {}", DEMO_CUSTOMER.0, DEMO_CUSTOMER.1);
    println!("  seller    {} / {}", crate::seed::load::DEMO_SELLER.0, crate::seed::load::DEMO_SELLER.1);
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
