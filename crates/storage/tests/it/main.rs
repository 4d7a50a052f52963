//! The integration tests of `tasks-storage` against a real PostgreSQL, one test binary
//! with a module per concern: migrations, the pool, the repository and idempotency store.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;
mod migrations;
mod pool;
mod repository;
