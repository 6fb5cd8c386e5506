//! Integration tests of the host: real wasmtime, real components built from source
//! (tests/plugins), real HTTP on loopback. One test binary, one module per area.

mod support;

mod cache;
mod cli;
mod console;
mod demo;
mod flows;
mod hostile;
mod http;
mod loading;
mod mcp_protocol;
mod outbox_crash;
mod prewarm;
mod publish;
mod scaffold;
mod server;
mod signing;
mod ssrf;
