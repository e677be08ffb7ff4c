//! What the test binaries share: the application under test and its typed
//! requests (`app`), the store it runs on (`backend`), fake puppets, WeCom,
//! WeChat, a provider's WeCom and DNS (`fakes`, `wechat`, `provider`), processes and ports (`process`),
//! clocks (`clock`) and waiting (`wait`). Feature files import from here,
//! never from each other.
//!
//! Each binary (`api`, the fast tier; `slow`: crash, cluster, backlog and
//! faults) uses a part of it, so the rest is dead code (and unused
//! re-exports) in that binary.
#![allow(dead_code, unused_imports)]

mod app;
mod backend;
mod clock;
mod component;
mod fakes;
mod process;
mod provider;
mod wait;
mod wechat;

pub use app::*;
pub use backend::*;
pub use clock::*;
pub use component::*;
pub use fakes::*;
pub use process::*;
pub use provider::*;
pub use wait::*;
pub use wechat::*;
