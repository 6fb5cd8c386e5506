//! The MCP server's view of the running host: the current actions as tools, a tool call as an
//! action call (the same input gate, error policy and limits as the REST tool-call path).

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use crate::call::{Call, CallReport, Failure, Trigger};
use crate::mcp::{NeededField, ToolBackend, ToolInfo, ToolOutcome};
use crate::plugin::Plugin;
use crate::registry::Actions;

/// The actions of a host, served as MCP tools. Follows hot reloads: every `tools/list` sees the
/// current set, and clients are notified when it changes.
pub struct ActionTools {
    actions: Arc<Actions>,
}

impl ActionTools {
    /// Tools over `actions`.
    pub fn new(actions: Arc<Actions>) -> Self {
        Self { actions }
    }
}

impl ToolBackend for ActionTools {
    fn tools(&self) -> Vec<ToolInfo> {
        self.actions
            .snapshot()
            .plugins()
            .map(|p| {
                let d = p.descriptor();
                ToolInfo {
                    name: d.name.clone(),
                    description: d.description.clone(),
                    input_schema: d.input_schema.clone(),
                    output_schema: d.output_schema.clone(),
                }
            })
            .collect()
    }

    fn call(
        &self,
        name: &str,
        mut inputs: Map<String, Value>,
    ) -> BoxFuture<'static, Option<ToolOutcome>> {
        let plugin = self.actions.snapshot().get(name);
        Box::pin(async move {
            let plugin = plugin?;
            crate::inputs::coerce(&mut inputs, &plugin.descriptor().input_schema);
            let report = plugin
                .invoke(Call {
                    trigger: Trigger::ToolCall,
                    inputs,
                    ..Call::default()
                })
                .await;
            Some(outcome(&plugin, report))
        })
    }

    fn watch_tools(&self) -> Option<tokio::sync::watch::Receiver<()>> {
        Some(self.actions.subscribe())
    }
}

fn outcome(plugin: &Plugin, report: CallReport) -> ToolOutcome {
    match report.result {
        Ok(o) => ToolOutcome::Ok {
            data: o.data,
            reply: o.reply,
        },
        Err(Failure::NeedsInput { fields }) => {
            let props = &plugin.descriptor().input_schema["properties"];
            ToolOutcome::NeedsInput {
                fields: fields
                    .into_iter()
                    .map(|f| NeededField {
                        schema: props
                            .get(&f.field)
                            .cloned()
                            .unwrap_or_else(|| Value::Object(Map::new())),
                        field: f.field,
                        reason: f.reason,
                        prompt: f.prompt,
                    })
                    .collect(),
            }
        }
        Err(failure) => ToolOutcome::Failed {
            class: failure.class().to_string(),
            message: failure.to_string(),
            error: serde_json::to_value(&failure).unwrap_or(Value::Null),
            say: report.fallback,
        },
    }
}

/// The MCP endpoint for `/mcp`: loopback `Host` names only unless the server is public (the
/// API key guards it either way), ended by the server's shutdown.
pub fn service(state: &super::AppState, public: bool) -> crate::mcp::HttpService {
    let backend: Arc<dyn ToolBackend> = Arc::new(ActionTools::new(state.actions.clone()));
    let mut options = crate::mcp::HttpOptions::default();
    if public {
        options.allowed_hosts.clear();
    }
    crate::mcp::http_service_with(backend, state.shutdown.clone(), options)
}
