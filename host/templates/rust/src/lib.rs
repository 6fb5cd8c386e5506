//! `{{name}}`: look up one item by id in the items API.
//!
//! GET `{base_url}/items/{id}` with the API's bearer token (a secret the host fills in; the
//! plugin only writes its placeholder). An unknown id is `not-found`, which the agent can relay.

use callout_guest::prelude::*;

/// What the agent must collect.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// The item's id.
    #[schemars(length(min = 1, max = 64))]
    id: String,
}

/// What the agent gets back.
#[derive(Serialize, Deserialize, JsonSchema)]
struct Item {
    id: String,
    name: String,
}

struct Lookup;

impl Action for Lookup {
    type Input = Input;
    type Output = Item;
    const NAME: &'static str = "{{name}}";
    const DESCRIPTION: &'static str = "Look up an item by its id";

    fn run(input: Input, _ctx: &Context) -> Result<Outcome<Item>, ActionError> {
        let base = config::require("base_url")?;
        let resp = http::get(format!("{}/items/{}", base.trim_end_matches('/'), input.id))
            .header("authorization", "Bearer {{secret.API_TOKEN}}")
            .header("accept", "application/json")
            .send()?;
        if resp.status() == 404 {
            return Err(ActionError::not_found(format!("there is no item {}", input.id)));
        }
        let item: Item = resp.error_for_status()?.json()?;
        let reply = format!("{} is {}.", item.id, item.name);
        Ok(Outcome::new(item).reply(reply))
    }
}

callout_guest::export_action!(Lookup);
