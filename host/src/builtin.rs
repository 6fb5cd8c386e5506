//! Built-in plugins, embedded in the binary: `component = "builtin:NAME"` in action.toml.
//!
//! They are WebAssembly components like any other (built from plugins/ by host/build.rs), run in
//! the same sandbox under the same grants; only their bytes come from the binary instead of a
//! file. Their configuration reaches them through the `config` import under reserved keys.

/// `config` keys reserved for built-ins: the manifest's `[request]`, `[response]` and `[inputs]`
/// as JSON. An action's own `[config]` may not use them.
pub const RESERVED_CONFIG_KEYS: [&str; 3] = ["request", "response", "inputs"];

/// One built-in plugin.
#[derive(Debug)]
pub struct Builtin {
    /// The name after `builtin:`.
    pub name: &'static str,
    /// The component.
    pub wasm: &'static [u8],
}

/// "Send API Request": the no-code action configured by `[request]` and `[response]`.
pub static SEND_API_REQUEST: Builtin = Builtin {
    name: "send-api-request",
    wasm: include_bytes!(concat!(env!("OUT_DIR"), "/send_api_request.wasm")),
};

static ALL: [&Builtin; 1] = [&SEND_API_REQUEST];

/// The built-in called `name`.
pub fn find(name: &str) -> Option<&'static Builtin> {
    ALL.iter().copied().find(|b| b.name == name)
}

/// Every built-in's name.
pub fn names() -> Vec<&'static str> {
    ALL.iter().map(|b| b.name).collect()
}
