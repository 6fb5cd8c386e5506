//! `crm-lead`: push a lead collected in the chat into the CRM.
//!
//! POST `{base_url}/crm/leads`. The SDK sends the call's idempotency key as `Idempotency-Key`,
//! so a retried delivery (chat-end actions are retried until they succeed) never creates a
//! second lead. An invalid email is refused before any request is made.

use callout_guest::prelude::*;

/// What the agent must collect.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Lead {
    /// The person's name.
    #[schemars(length(min = 1, max = 200))]
    name: String,
    /// Where the sales team can reach them.
    #[schemars(email)]
    email: String,
    /// Their company, if they said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    company: Option<String>,
    /// What they asked about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inquiry: Option<String>,
}

/// What the agent gets back.
#[derive(Serialize, Deserialize, JsonSchema)]
struct Created {
    /// The CRM's id of the lead.
    id: String,
    created_at: Option<String>,
}

/// A plain, strict email check: one `@`, a non-empty local part, a dotted domain, no spaces.
fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && domain.split('.').count() >= 2
        && domain.split('.').all(|label| !label.is_empty())
}

struct CrmLead;

impl Action for CrmLead {
    type Input = Lead;
    type Output = Created;
    const NAME: &'static str = "crm-lead";
    const DESCRIPTION: &'static str =
        "Create a sales lead in the CRM from details collected in the chat";

    fn run(lead: Lead, _ctx: &Context) -> Result<Outcome<Created>, ActionError> {
        let mut errors = Vec::new();
        if lead.name.trim().is_empty() {
            errors.push(("name", "must not be empty"));
        }
        if !is_email(&lead.email) {
            errors.push(("email", "is not a valid email address"));
        }
        if !errors.is_empty() {
            return Err(ActionError::invalid_inputs(errors));
        }
        let base = config::require("base_url")?;
        let resp = http::post(format!("{}/crm/leads", base.trim_end_matches('/')))
            .header("authorization", "Bearer {{secret.CRM_TOKEN}}")
            .json(&lead)
            .send()?;
        let created: Created = resp.error_for_status()?.json()?;
        let reply = format!(
            "Thanks {}, our team will be in touch at {}.",
            lead.name.trim(),
            lead.email
        );
        Ok(Outcome::new(created).reply(reply))
    }
}

callout_guest::export_action!(CrmLead);
