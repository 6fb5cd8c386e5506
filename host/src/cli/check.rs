//! `callout check`: validate, compile, cross-check, show the grants, and lint (see
//! [`crate::lint`]; the lints that need requests run the action's test cases, offline).

use std::fmt::Write as _;

use super::{CliError, GlobalArgs};
use crate::plugin::Plugin;

/// Arguments of `callout check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Fail on lint warnings too (for CI).
    #[arg(long)]
    pub deny_warnings: bool,
}

impl CheckArgs {
    /// Loads every action and prints each one's grants; fails if any action did not load.
    ///
    /// # Errors
    /// [`CliError::LoadFailures`] listing each bad action with its file, field and fix.
    pub async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        let (runtime, registry) = global.registry().await?;
        let mut out = String::new();
        for plugin in registry.plugins() {
            describe_grants(&mut out, plugin);
        }
        let dev = runtime.dev_loopback();
        if !dev.is_empty() {
            let _ = writeln!(
                out,
                "dev-loopback in force: {}",
                dev.entries()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        // Lints: every action's cases run first (offline), then each action is linted with the
        // conversation variables the whole set is known to produce.
        let plugins: Vec<_> = registry.plugins().collect();
        let mut cases = Vec::with_capacity(plugins.len());
        let mut problems = Vec::new();
        for p in &plugins {
            match crate::cases::load(p) {
                Ok(c) => cases.push(c),
                Err(e) => {
                    problems.push(format!("{}: {e}", p.name()));
                    cases.push(Vec::new());
                }
            }
        }
        let known = crate::lint::known_variables(
            plugins
                .iter()
                .map(|p| &***p)
                .zip(cases.iter().map(Vec::as_slice)),
        );
        let (mut errors, mut warnings) = (0usize, 0usize);
        for (p, c) in plugins.iter().zip(&cases) {
            // Served actions compile their patterns at the first message; compile them here so
            // one too large for the regex size limit is found before it is served.
            let compiled = p
                .conditions()
                .map_or(Ok(()), |c| c.compile_now())
                .and_then(|()| p.extractor().compile_now());
            if let Err(m) = compiled {
                errors += 1;
                // `m` names the manifest and the field.
                let f = format!(
                    "error: {m}; simplify the pattern (fewer repetitions of Unicode classes, \
                     or `(?-u)` where ASCII is enough)"
                );
                let _ = writeln!(out, "{f}");
                problems.push(f);
            }
            let mut results = Vec::with_capacity(c.len());
            for case in c {
                results.push(crate::cases::run(p, case).await);
            }
            for f in crate::lint::lint(p, c, &results, &known) {
                match f.severity {
                    crate::lint::Severity::Error => errors += 1,
                    crate::lint::Severity::Warning => warnings += 1,
                }
                let _ = writeln!(out, "{f}");
                problems.push(f.to_string());
            }
        }
        let ok = registry.plugins().count();
        let failed = registry.failures().len();
        let _ = writeln!(
            out,
            "{ok} action(s) ok, {failed} failed; lints: {errors} error(s), {warnings} warning(s)"
        );
        print!("{out}");
        if failed > 0 {
            return Err(CliError::LoadFailures(
                registry.failures().iter().map(|e| e.to_string()).collect(),
            )
            .into());
        }
        if !problems.is_empty() && (errors > 0 || (self.deny_warnings && warnings > 0)) {
            let blocking = if self.deny_warnings {
                errors + warnings
            } else {
                errors
            };
            return Err(CliError::Failed(format!(
                "check failed: {blocking} lint finding(s) block publishing (listed above{})",
                if self.deny_warnings {
                    "; --deny-warnings counts warnings"
                } else {
                    ""
                }
            ))
            .into());
        }
        Ok(())
    }
}

fn describe_grants(out: &mut String, plugin: &Plugin) {
    let m = plugin.manifest();
    let d = plugin.descriptor();
    let _ = writeln!(out, "ok {} ({})", m.name(), m.path.display());
    let _ = writeln!(
        out,
        "   component: {} (compile cache: {})",
        m.component_path.display(),
        plugin.cache_status().as_str()
    );
    let _ = writeln!(out, "   trigger: {}", m.raw.trigger.kind.as_str());
    let required: Vec<&str> = d.input_schema["required"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let inputs: Vec<String> = d.input_schema["properties"]
        .as_object()
        .map(|p| {
            p.keys()
                .map(|k| {
                    if required.contains(&k.as_str()) {
                        format!("{k} (required)")
                    } else {
                        k.clone()
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "   inputs: {}",
        if inputs.is_empty() {
            "none".into()
        } else {
            inputs.join(", ")
        }
    );
    if m.http.allow.entries().is_empty() {
        let _ = writeln!(out, "   http: nothing granted");
    } else {
        for e in m.http.allow.entries() {
            let _ = writeln!(out, "   http: {e}");
        }
        let _ = writeln!(
            out,
            "   http limits: timeout {} ms, response {} bytes, request body {} bytes",
            m.http.timeout_ms, m.http.max_response_bytes, m.http.max_request_bytes
        );
    }
    for (name, s) in &m.secrets {
        let places: Vec<&str> = s.places.iter().map(|p| p.as_str()).collect();
        let hosts: Vec<String> = s.binding.hosts.iter().map(|h| h.spec()).collect();
        let _ = writeln!(
            out,
            "   secret {name}: from {}, filled into {} only, sent to {} only",
            s.source,
            places.join(", "),
            hosts.join(", ")
        );
    }
    let l = &m.limits;
    let _ = writeln!(
        out,
        "   limits: memory {} MiB, deadline {} ms, output {} KiB, table elements {}, instances {}",
        l.memory_bytes >> 20,
        l.deadline_ms,
        l.output_bytes >> 10,
        l.table_elements,
        l.instances
    );
}
