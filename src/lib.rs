//! wxkf-manager: receives WeCom customer-service callbacks, stores them
//! durably, and delivers each to the puppet registered for its kfId.

pub mod cli;
pub mod cli_channels;
pub mod cli_providers;
pub mod cli_store;
pub mod clock;
pub mod config;
pub mod copy;
pub mod credentials;
pub mod delivery;
pub mod directory;
pub mod domain;
pub mod history;
pub mod http;
pub mod metrics;
pub mod providers;
pub mod simulate;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tokens;
pub mod views;
pub mod wecom;
