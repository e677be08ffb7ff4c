//! The integration tests: the real server over real sockets, with fake
//! puppets and a fake WeCom as in-test HTTP servers.
//!
//! The store backend is chosen by `WXKF_TEST_STORE` (`sqlite`, the default,
//! or `mongo`, which needs `MONGO_URI`); `scripts/test` runs the suite on both.

mod admin;
mod backlog;
mod callback;
mod channels;
mod cli;
mod cluster;
mod copy;
mod crash;
mod delivery;
mod fakes;
mod faults;
mod helpers;
mod mongo;
mod puppets;
mod secure_defaults;
mod security;
mod simulate;
mod store;
mod tokens;
mod upgrade;
mod wechat_api;
