//! Write Callout actions in Rust.
//!
//! This crate carries the bindings of Callout's WIT contract (`callout:plugin@0.1.0`, world
//! `action-plugin`, in `wit/` at the repository root) so that a plugin depends on one crate and
//! never runs a code generator itself. Build plugins for `wasm32-wasip2`:
//!
//! ```text
//! rustup target add wasm32-wasip2
//! cargo build --release --target wasm32-wasip2
//! ```
//!
//! The raw bindings live in [`bindings`]; implement
//! [`bindings::exports::callout::plugin::action::Guest`] on a type and export it with
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

pub use bindings::export;
