//! The `emporium` binary's library: command line, application assembly and the demo seed.
//! `main.rs` is a thin shim so tests can build and spawn the same application.

pub mod app;
pub mod cli;
mod demo;
mod health;
pub mod progress;
pub mod seed;
mod wiring;

pub use app::{App, ServiceSet};
