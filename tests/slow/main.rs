//! The slow tier: managers killed mid-stream (`crash`), several managers on
//! one MongoDB (`cluster`), backlogs of tens of thousands (`backlog`), and
//! the faults production brings (`faults`, `mongo`). `scripts/test` and CI
//! run it on both stores; `cargo test --test slow` runs it alone.

#[path = "../support/mod.rs"]
mod support;

mod backlog;
mod cluster;
mod crash;
mod faults;
mod mongo;
