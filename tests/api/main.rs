//! The fast tier of the integration tests: the real server over real
//! sockets, with fake puppets and a fake WeCom as in-test HTTP servers.
//! `cargo test` runs it on the embedded store in about a minute; the slow
//! tier (crash, cluster, backlog, faults) is the `slow` binary.
//!
//! The store backend is chosen by `WXKF_TEST_STORE` (`sqlite`, the default,
//! or `mongo`, which needs `MONGO_URI`); `scripts/test` runs both tiers on
//! both. Tests that need MongoDB whatever the backend are ignored unless
//! run with `--include-ignored` (see `support::backend`).

#[path = "../support/mod.rs"]
mod support;

mod admin;
mod alerting;
mod callback;
mod channels;
mod cli;
mod components;
mod copy;
mod delivery;
mod puppets;
mod secure_defaults;
mod security;
mod simulate;
mod store;
mod suites;
mod tokens;
mod upgrade;
mod wechat_api;
