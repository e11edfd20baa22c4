//! Kernel integration tests against real SQLite files and a real PostgreSQL server.

mod db;
mod events;
mod storage;
