//! Write Callout actions in Rust.
//!
//! An action is a WebAssembly component (target `wasm32-wasip2`) that implements Callout's WIT
//! contract, `callout:plugin@0.1.0`, world `action-plugin` (in `wit/` at the repository root).
//! With this crate a plugin is a type implementing [`Action`], with typed inputs and outputs,
//! exported by [`export_action!`]:
//!
//! ```no_run
//! use callout_guest::prelude::*;
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct Input {
//!     /// The 6-digit order number
//!     order_id: String,
//! }
//!
//! #[derive(Serialize, Deserialize, JsonSchema)]
//! struct Output {
//!     status: String,
//!     eta: Option<String>,
//! }
//!
//! struct OrderStatus;
//!
//! impl Action for OrderStatus {
//!     type Input = Input;
//!     type Output = Output;
//!     const NAME: &'static str = "order-status";
//!     const DESCRIPTION: &'static str = "Look up the latest status of a customer's order";
//!
//!     fn run(input: Input, _ctx: &Context) -> Result<Outcome<Output>, ActionError> {
//!         let base = config::require("base_url")?;
//!         let resp = http::get(format!("{base}/orders/{}", input.order_id))
//!             .header("authorization", "Bearer {{secret.ORDERS_TOKEN}}")
//!             .send()?;
//!         if resp.status() == 404 {
//!             return Err(ActionError::not_found(format!("no order {}", input.order_id)));
//!         }
//!         let order: Output = resp.error_for_status()?.json()?;
//!         Ok(Outcome::new(order).reply("Your order is on its way"))
//!     }
//! }
//!
//! callout_guest::export_action!(OrderStatus);
//! ```
//!
//! # What the SDK does for you
//!
//! - **`describe()`** reports [`Action::NAME`], [`Action::DESCRIPTION`] and JSON Schemas
//!   (draft 2020-12) derived with `schemars` from [`Action::Input`] (as deserialized: an object
//!   schema with `properties` and `required`; doc comments become descriptions) and
//!   [`Action::Output`] (as serialized). A schema is never written twice. See [`describe_of`].
//! - **`invoke()`** parses the call's inputs into [`Action::Input`] (a field that does not fit
//!   becomes [`ActionError::InvalidInput`] naming it), builds the [`Context`], runs
//!   [`Action::run`] and serializes the [`Outcome`].
//! - **Idempotency**: while a call runs, writes made with [`http`] (POST, PUT, PATCH, DELETE)
//!   carry its [`Context::idempotency_key`] as `Idempotency-Key`, the same on every retry.
//! - **Dry runs**: when the host only records requests ([`Context::dry_run`]),
//!   [`send`](http::RequestBuilder::send) fails with [`http::Error::DryRun`]; propagated with
//!   `?` out of `run` it makes the call **succeed** with `data` = `null` and no reply: the host
//!   already has the request it wanted to see, and the plugin just finishes.
//! - **Errors**: `?` turns an [`http::Error`] into the matching [`ActionError`], and
//!   [`Response::error_for_status`](http::Response::error_for_status) maps 429, 5xx and other
//!   4xx to upstream errors the action's error policy understands.
//!
//! # A plugin crate
//!
//! ```toml
//! [package]
//! name = "order-status"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! callout-guest = { path = "../../guest-sdk" }
//! # `#[derive(Serialize, Deserialize)]` needs serde itself among the plugin's dependencies;
//! # `#[derive(JsonSchema)]` needs nothing more than the prelude.
//! serde = "1"
//!
//! [profile.release]
//! opt-level = "s"
//! lto = true
//! codegen-units = 1
//! strip = true
//! ```
//!
//! Build it as a component:
//!
//! ```text
//! rustup target add wasm32-wasip2
//! cargo build --release --target wasm32-wasip2
//! ```
//!
//! and point the action's `action.toml` at the result, granting what `run` uses:
//!
//! ```toml
//! name = "order-status"
//! component = "target/wasm32-wasip2/release/order_status.wasm"
//!
//! [config]                       # config::get / config::require
//! base_url = "https://orders.example.com"
//!
//! [http]                         # every URL and method http:: may use
//! allow = ["{{config.base_url}}/orders/"]
//! methods = ["GET"]
//!
//! [secrets.ORDERS_TOKEN]         # {{secret.ORDERS_TOKEN}} in a header, for these hosts only
//! from = "env:ORDERS_API_TOKEN"
//! hosts = ["{{config.base_url}}"]
//! ```
//!
//! # Testing a plugin
//!
//! The host's imports ([`http`], [`config`], [`log`]) exist only inside a component; natively
//! they panic. Everything else is plain Rust: [`describe_of`] gives the descriptor,
//! `Context::default()` a context for calling [`Action::run`] on code paths that do not reach
//! the network, and [`http::Response::new`] responses to feed
//! [`error_for_status`](http::Response::error_for_status) and [`json`](http::Response::json).
//!
//! # Raw bindings
//!
//! The generated bindings are in [`bindings`]; a plugin that wants them can implement
//! [`bindings::exports::callout::plugin::action::Guest`] itself and export it with
//! [`export!`].
#![deny(missing_docs)]

/// Bindings generated from `wit/` for the `action-plugin` world.
///
/// Imports (`outbound_http`, `log`, `config`) are under `callout::plugin`; the `action` export
/// is under `exports::callout::plugin::action`.
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "action-plugin",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "::callout_guest::bindings",
        generate_all,
    });
}

mod action;
pub mod config;
mod error;
mod glue;
pub mod http;
pub mod log;

pub use action::{Action, Context, Message, Outcome, Role, Trigger};
pub use bindings::export;
pub use error::{ActionError, FieldError, UpstreamError, UpstreamKind};
pub use glue::{describe_of, input_schema, output_schema, parse_inputs};

/// The crates behind the derives and JSON values, re-exported for plugins.
pub use schemars;
pub use serde;
pub use serde_json;

/// Everything a plugin usually needs: `use callout_guest::prelude::*;`.
pub mod prelude {
    pub use crate::{Action, ActionError, Context, Outcome, Trigger, config, http, log};
    pub use schemars::JsonSchema;
    pub use serde::{Deserialize, Serialize};

    // `#[derive(JsonSchema)]` refers to `schemars::...`: this makes that path resolve in a
    // module that imports the prelude, without a direct dependency on schemars.
    #[doc(hidden)]
    pub use schemars;
}

#[doc(hidden)]
pub mod __private {
    pub use crate::glue::Export;
}

/// Exports an [`Action`] as the component's `callout:plugin/action` export.
///
/// Use it once per plugin crate, at the top level, with the action's type:
///
/// ```ignore
/// callout_guest::export_action!(OrderStatus);
/// ```
///
/// It implements the WIT `Guest` (`describe` and `invoke`, see the crate docs for what they
/// do) and invokes [`export!`] with the SDK's bindings.
#[macro_export]
macro_rules! export_action {
    ($action:ty) => {
        const _: () = {
            type __CalloutActionExport = $crate::__private::Export<$action>;
    $crate::export!(__CalloutActionExport with_types_in $crate::bindings);
        };
    };
}
