//! `hostile`: misbehaves on purpose, one way per `mode`; the host must contain every one of them.

use std::hint::black_box;
use std::io::Write;

use callout_guest::bindings::callout::plugin::log;
use callout_guest::bindings::exports::callout::plugin::action::{
    ActionError, Descriptor, FieldError, Guest, Invocation, Outcome,
};
use serde_json::{Map, Value, json};

const INPUT_SCHEMA: &str = r#"{"type":"object","properties":{"mode":{"type":"string","enum":["ok","loop","alloc","trap","panic","flood","stderr-flood","log-flood","scatter"]},"mb":{"type":"integer","minimum":0}},"required":["mode"]}"#;
const OUTPUT_SCHEMA: &str = r#"{"type":"object"}"#;

const MIB: usize = 1024 * 1024;
const CHUNK: usize = 64 * 1024;
const FLOOD_MB: usize = 16;

struct Hostile;

impl Guest for Hostile {
    fn describe() -> Descriptor {
        Descriptor {
            name: "hostile".into(),
            description: "Misbehaves on purpose: loops, allocates, traps, panics or floods output"
                .into(),
            input_schema: INPUT_SCHEMA.into(),
            output_schema: OUTPUT_SCHEMA.into(),
        }
    }

    fn invoke(call: Invocation) -> Result<Outcome, ActionError> {
        let inputs: Map<String, Value> = serde_json::from_str(&call.inputs)
            .map_err(|e| ActionError::Internal(format!("inputs are not a JSON object: {e}")))?;
        let mode = inputs.get("mode").and_then(Value::as_str).unwrap_or("");
        let data = match mode {
            "ok" => json!({ "ok": true }),
            "loop" => spin(),
            "alloc" => {
                let mb = inputs.get("mb").and_then(Value::as_u64).unwrap_or(0);
                alloc(mb)
            }
            "trap" => trap(),
            "scatter" => scatter(),
            "panic" => panic!("hostile plugin panicked on purpose"),
            "flood" => {
                flood(&mut std::io::stdout());
                json!({ "flooded_mb": FLOOD_MB })
            }
            "stderr-flood" => {
                flood(&mut std::io::stderr());
                json!({ "flooded_mb": FLOOD_MB })
            }
            "log-flood" => {
                let line = "x".repeat(1024);
                for _ in 0..100_000 {
                    log::log(log::Level::Info, &line);
                }
                json!({ "logged": 100_000 })
            }
            other => {
                return Err(ActionError::InvalidInput(vec![FieldError {
                    field: "mode".into(),
                    reason: format!("unknown mode {other:?}"),
                }]));
            }
        };
        Ok(Outcome {
            data: data.to_string(),
            reply: None,
            variables: "{}".into(),
        })
    }
}

/// Never returns; `black_box` keeps the optimizer from removing the loop.
fn spin() -> ! {
    let mut counter: u64 = 0;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// Allocates `mb` MiB as separate 1 MiB blocks, writing every byte so memory really grows, and
/// keeps them all alive until the end. Past the host's memory limit the allocation fails and the
/// default alloc-error handler aborts (a trap).
fn alloc(mb: u64) -> Value {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    for i in 0..mb {
        blocks.push(vec![(i as u8) | 1; MIB]);
    }
    black_box(&blocks);
    json!({ "allocated_mb": mb })
}

/// `scatter`'s zero-initialised buffer: 4 MiB of the component's memory image (`.bss`).
const SCATTER_BYTES: usize = 4 * MIB;
static mut SCATTER: [u8; SCATTER_BYTES] = [0; SCATTER_BYTES];

/// Counts the non-zero bytes of `SCATTER` (a fresh instance has none), then writes one byte in
/// every other 4 KiB page of it: 512 written pages with a clean page between each two, so the
/// host's reset of this memory sees 512 separate regions. A reset that missed any of them would
/// show up as `stale_bytes` in the next fresh instance.
fn scatter() -> Value {
    let buf = std::ptr::addr_of_mut!(SCATTER).cast::<u8>();
    let mut stale = 0usize;
    for i in 0..SCATTER_BYTES {
        // SAFETY: in bounds of the static; one call at a time per instance.
        if unsafe { std::ptr::read_volatile(buf.add(i)) } != 0 {
            stale += 1;
        }
    }
    let mut written = 0usize;
    for page in (0..SCATTER_BYTES / 4096).step_by(2) {
        // SAFETY: as above.
        unsafe { std::ptr::write_volatile(buf.add(page * 4096 + 7), 0xA5) };
        written += 1;
    }
    json!({ "stale_bytes": stale, "pages_written": written })
}

fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    {
        core::arch::wasm32::unreachable()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        panic!("trap mode: not on wasm32")
    }
}

/// Writes `FLOOD_MB` MiB in 64 KiB chunks, ignoring write errors (the host may cap the stream).
fn flood(out: &mut impl Write) {
    let chunk = vec![b'#'; CHUNK];
    for _ in 0..FLOOD_MB * MIB / CHUNK {
        let _ = out.write_all(&chunk);
    }
    let _ = out.flush();
}

callout_guest::export!(Hostile);
