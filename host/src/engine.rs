//! The wasmtime [`Engine`]: built once per process and shared by every action.
//!
//! Settings and why:
//! - component model on, concurrency support off (it costs per call and no plugin needs it);
//! - epoch interruption, driven by [`EpochTicker`] every [`EPOCH_TICK`], so a looping plugin is
//!   stopped at its deadline without the cost of fuel metering;
//! - the pooling allocator with copy-on-write memory images, so a call's instantiation is a few
//!   microseconds; its limits come from `[pool]` in callout.toml, and so do its reset settings:
//!   the pages a call wrote (found with `PAGEMAP_SCAN`) are reset in place, up to 1 MiB per
//!   memory, so the next call in that slot takes no page faults and causes no TLB shootdown for
//!   them, and what remains is returned to the kernel 16 slots at a time (one shootdown per
//!   batch instead of per call); the scan is used only where no swap is active (see
//!   [`pagemap_scan_is_safe`]);
//! - memory growth failures trap (instead of returning -1, which Rust guests turn into an
//!   `unreachable` abort with no explanation).

use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::PoolLimits;

/// How often the epoch advances. A call's deadline is enforced to within about this much.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The largest wasm stack a call may use: 1 MiB.
pub const MAX_WASM_STACK: usize = 1 << 20;

/// Builds the process's engine with the pool sized by `pool`.
///
/// # Errors
/// An invalid pool configuration (e.g. limits the platform cannot reserve).
pub fn build_engine(pool: &PoolLimits) -> anyhow::Result<Engine> {
    let scan = pool.pagemap_scan && pagemap_scan_is_safe(&read_proc_swaps());
    if pool.pagemap_scan && !scan {
        tracing::warn!(
            "[pool] pagemap_scan is off: swap is active (/proc/swaps), and wasmtime's scan \
             would not reset a written page that is swapped out; slots are reset without it \
             (slower fresh calls, same isolation). Turn swap off on this host to get it back."
        );
    }
    let mut p = PoolingAllocationConfig::new();
    p.total_component_instances(pool.total_component_instances)
        .total_core_instances(pool.total_core_instances)
        .total_memories(pool.total_memories)
        .total_tables(pool.total_tables)
        .total_stacks(pool.total_component_instances)
        .max_core_instances_per_component(pool.max_core_instances_per_component)
        .max_memories_per_component(pool.max_memories_per_component)
        .max_tables_per_component(pool.max_tables_per_component)
        .max_memories_per_module(1)
        .max_tables_per_module(pool.max_tables_per_component)
        .table_elements(pool.table_elements)
        .max_memory_size((pool.max_memory_mb as usize) << 20)
        .max_core_instance_size(pool.max_core_instance_size_kb << 10)
        .max_component_instance_size(pool.max_component_instance_size_kb << 10)
        .decommit_batch_size(pool.decommit_batch_size)
        .linear_memory_keep_resident(pool.memory_keep_resident_kb << 10)
        .table_keep_resident(pool.table_keep_resident_kb << 10)
        .pagemap_scan(if scan { Enabled::Auto } else { Enabled::No });

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .concurrency_support(false)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .memory_init_cow(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    Engine::new(&config).map_err(anyhow::Error::from)
}

/// `/proc/swaps`, or empty where it cannot be read (not Linux: there is no `PAGEMAP_SCAN`).
fn read_proc_swaps() -> String {
    std::fs::read_to_string("/proc/swaps").unwrap_or_default()
}

/// Whether the pool may reset slots with `PAGEMAP_SCAN`, given the text of `/proc/swaps`: only
/// when no swap area is active.
///
/// Why: wasmtime 48 resets in place the pages the scan reports as written *and present*, and
/// decommits only what lies past the point where its scan stopped. A page a call wrote that the
/// kernel has swapped out is written but not present: it is neither reset nor decommitted, and
/// the next instance in that slot would read the previous call's data when it touches it
/// (reported upstream, wasmtime pull request 14357, open). Without the scan the reset copies
/// back the lowest `memory_keep_resident_kb` and decommits all the rest, which is correct
/// whatever is swapped. Swap turned on after the engine is built is not seen: restart the host.
pub fn pagemap_scan_is_safe(proc_swaps: &str) -> bool {
    // The first line is the header; each further line is an active swap area.
    !proc_swaps.lines().skip(1).any(|l| !l.trim().is_empty())
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a dedicated thread, for as long as the
/// engine lives.
///
/// A thread rather than a tokio task: the ticker must keep running when every runtime worker is
/// busy inside a guest. It holds the engine weakly and ends at the first tick after the engine
/// is gone, not when the [`crate::Runtime`] that started it is dropped: loaded actions keep the
/// engine (and may outlive their runtime), and every call they make must still meet its
/// deadline, or a looping plugin would spin for ever.
pub struct EpochTicker {
    _thread: std::thread::JoinHandle<()>,
}

impl EpochTicker {
    /// Starts ticking `engine`.
    pub fn start(engine: &Engine) -> Self {
        let engine = engine.weak();
        let thread = std::thread::Builder::new()
            .name("callout-epoch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(EPOCH_TICK);
                    match engine.upgrade() {
                        Some(e) => e.increment_epoch(),
                        None => break,
                    }
                }
            })
            .expect("spawn the epoch thread");
        Self { _thread: thread }
    }
}

/// Epoch ticks for a deadline of `ms` milliseconds, rounded up, plus one tick so a deadline is
/// never shorter than asked.
pub fn deadline_ticks(ms: u64) -> u64 {
    let tick = EPOCH_TICK.as_millis() as u64;
    ms.div_ceil(tick) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_ticks_round_up_and_add_one() {
        assert_eq!(deadline_ticks(10), 2);
        assert_eq!(deadline_ticks(11), 3);
        assert_eq!(deadline_ticks(10_000), 1_001);
    }

    #[test]
    fn pagemap_scan_is_used_only_without_active_swap() {
        let header = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";
        assert!(pagemap_scan_is_safe(header));
        assert!(
            pagemap_scan_is_safe(""),
            "no /proc/swaps: no swap to worry about"
        );
        let with_file =
            format!("{header}/swapfile                               file\t\t2097148\t\t0\t\t-2\n");
        assert!(!pagemap_scan_is_safe(&with_file));
        let with_partition = format!("{header}/dev/vda3 partition 8388604 1024 -2\n");
        assert!(!pagemap_scan_is_safe(&with_partition));
    }
}
