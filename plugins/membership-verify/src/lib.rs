//! `membership-verify`: check that a membership is active before the next step.
//!
//! POST `{base_url}/memberships/verify` with the member id and date of birth. An unknown member
//! (or a date of birth that does not match) is `not-found`; the API does not say which.

use callout_guest::prelude::*;

/// What the agent must collect.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// The member's id, `M-` followed by digits.
    #[schemars(regex(pattern = r"^M-[0-9]+$"))]
    member_id: String,
    /// The member's date of birth, YYYY-MM-DD, to confirm identity.
    #[schemars(regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"))]
    date_of_birth: String,
}

/// The membership API's answer.
#[derive(Deserialize)]
struct ApiAnswer {
    member_id: String,
    status: String,
    plan: String,
    valid_until: Option<String>,
    expired_on: Option<String>,
}

/// What the agent gets back.
#[derive(Serialize, Deserialize, JsonSchema)]
struct Membership {
    member_id: String,
    /// Whether the membership is active now.
    active: bool,
    plan: String,
    valid_until: Option<String>,
    expired_on: Option<String>,
}

fn check(input: &Input) -> Result<(), ActionError> {
    let mut errors = Vec::new();
    let id = input.member_id.strip_prefix("M-").unwrap_or("");
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        errors.push(("member_id", "must be M- followed by digits, like M-1001"));
    }
    let d = input.date_of_birth.as_bytes();
    let shaped = d.len() == 10
        && d[4] == b'-'
        && d[7] == b'-'
        && d.iter()
            .enumerate()
            .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
    if !shaped {
        errors.push(("date_of_birth", "must be a date written YYYY-MM-DD"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ActionError::invalid_inputs(errors))
    }
}

struct MembershipVerify;

impl Action for MembershipVerify {
    type Input = Input;
    type Output = Membership;
    const NAME: &'static str = "membership-verify";
    const DESCRIPTION: &'static str =
        "Check whether a member's membership is active, and on which plan";

    fn run(input: Input, _ctx: &Context) -> Result<Outcome<Membership>, ActionError> {
        check(&input)?;
        let base = config::require("base_url")?;
        let resp = http::post(format!("{}/memberships/verify", base.trim_end_matches('/')))
            .header("authorization", "Bearer {{secret.MEMBERSHIP_TOKEN}}")
            .json(&input)
            .send()?;
        if resp.status() == 404 {
            return Err(ActionError::not_found(format!(
                "no membership matches {} with that date of birth",
                input.member_id
            )));
        }
        let a: ApiAnswer = resp.error_for_status()?.json()?;
        let active = a.status == "active";
        let reply = if active {
            format!(
                "Membership {} is active on the {} plan{}.",
                a.member_id,
                a.plan,
                a.valid_until
                    .as_ref()
                    .map(|d| format!(" until {d}"))
                    .unwrap_or_default()
            )
        } else {
            format!(
                "Membership {} is not active{}.",
                a.member_id,
                a.expired_on
                    .as_ref()
                    .map(|d| format!(" (it expired on {d})"))
                    .unwrap_or_default()
            )
        };
        let out = Membership {
            member_id: a.member_id,
            active,
            plan: a.plan,
            valid_until: a.valid_until,
            expired_on: a.expired_on,
        };
        Ok(Outcome::new(out)
            .reply(reply)
            .variable("membership_active", active))
    }
}

callout_guest::export_action!(MembershipVerify);
