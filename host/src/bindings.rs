#![allow(missing_docs)]
//! The host side of the WIT contract in `wit/` (the only `bindgen!` of the crate).
//!
//! Every import is `async` (the outbound request awaits the network) and `trappable`, so a host
//! bug becomes a contained trap of one call instead of a panic of the process.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "action-plugin",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use self::callout::plugin::log::Level;
pub use self::callout::plugin::outbound_http::{Denial, HttpError, Method, Request, Response};
pub use self::exports::callout::plugin::action::{
    ActionError, Descriptor, FieldError, Invocation, Message, Outcome, Role, TriggerKind,
    UpstreamError, UpstreamKind,
};
