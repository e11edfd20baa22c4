//! API tests: the whole application served on port 0 with a fresh database per test, every test
//! on SQLite and on PostgreSQL.

mod cart;
mod catalog;
mod edge;
mod helpers;
mod inventory;
mod orders;
mod process;
mod search;
mod users;
