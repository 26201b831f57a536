//! One module per subcommand.

pub(crate) mod auth;
pub(crate) mod bans;
pub(crate) mod bench;
pub(crate) mod chat;
pub(crate) mod config;
pub(crate) mod demo;
pub(crate) mod keys;
pub(crate) mod metrics;
pub(crate) mod serve;
pub(crate) mod service;
