//! Callout runs the API actions of AI agents as sandboxed WebAssembly components.
//!
//! An action is a component built against the WIT world `callout:plugin/action-plugin` (in `wit/`)
//! plus an `action.toml` in which its operator grants what it may do. The host loads actions at
//! run time ([`Registry::load_dir`]), checks each manifest against the component's `describe()`,
//! and calls an action ([`Plugin::invoke`]) in a fresh, limited instance whose only way out is a
//! policy-checked HTTP import.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use callout::{Call, Registry, Runtime, RuntimeOptions};
//! let runtime = Runtime::new(RuntimeOptions::new(".callout"))?;
//! let registry = Registry::load_dir(&runtime, "plugins".as_ref()).await?;
//! let action = registry.get("order-status").expect("loaded");
//! let inputs = serde_json::json!({"order_id": "123456"});
//! let report = action.invoke(Call::tool(inputs.as_object().unwrap().clone())).await;
//! println!("{:?}", report.result);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod audit;
pub mod bindings;
pub mod builtin;
pub mod cache;
pub mod call;
pub mod cases;
pub mod chat;
pub mod cli;
pub mod config;
pub mod conversations;
pub mod db;
pub mod delivery;
pub mod demo;
pub mod engine;
pub mod error;
pub mod error_policy;
pub mod gate;
pub mod inputs;
pub mod lint;
pub mod manifest;
pub mod mcp;
pub mod metrics;
pub mod outbound_http;
pub mod outbox;
pub mod phases;
pub mod plugin;
pub mod policy;
pub mod registry;
pub mod server;
pub mod state;
pub mod tools;
pub mod triggers;

pub use call::{Call, CallReport, Failure, Outcome, Trigger};
pub use config::HostConfig;
pub use error::{LoadError, LoadErrorKind};
pub use outbound_http::Secrets;
pub use plugin::{Plugin, Runtime, RuntimeOptions};
pub use registry::Registry;
