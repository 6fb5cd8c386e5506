//! `order-status`: look up an order in the order-management API.
//!
//! GET `{base_url}/orders/{order_id}` with the back end's bearer token (a secret the host fills
//! in). An unknown order is `not-found`, a business answer the agent can relay.

use callout_guest::prelude::*;

/// What the agent must collect.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// The customer's 6-digit order number.
    #[schemars(regex(pattern = r"^[0-9]{6}$"))]
    order_id: String,
}

/// One line of an order.
#[derive(Serialize, Deserialize, JsonSchema)]
struct Item {
    sku: String,
    name: String,
    quantity: u32,
}

/// What the agent gets back.
#[derive(Serialize, Deserialize, JsonSchema)]
struct Order {
    order_id: String,
    /// `processing`, `shipped` or `delivered`.
    status: String,
    carrier: Option<String>,
    tracking_number: Option<String>,
    items: Vec<Item>,
    /// Estimated delivery date (YYYY-MM-DD), when known.
    eta: Option<String>,
}

struct OrderStatus;

impl Action for OrderStatus {
    type Input = Input;
    type Output = Order;
    const NAME: &'static str = "order-status";
    const DESCRIPTION: &'static str =
        "Look up the latest status, items and delivery estimate of a customer's order";

    fn run(input: Input, _ctx: &Context) -> Result<Outcome<Order>, ActionError> {
        let id = input.order_id;
        if id.len() != 6 || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ActionError::invalid_input(
                "order_id",
                "must be exactly 6 digits",
            ));
        }
        let base = config::require("base_url")?;
        let resp = http::get(format!("{}/orders/{id}", base.trim_end_matches('/')))
            .header("authorization", "Bearer {{secret.ORDERS_TOKEN}}")
            .header("accept", "application/json")
            .send()?;
        if resp.status() == 404 {
            return Err(ActionError::not_found(format!("there is no order {id}")));
        }
        let order: Order = resp.error_for_status()?.json()?;
        let reply = match (order.status.as_str(), &order.eta) {
            ("shipped", Some(eta)) => format!(
                "Order {id} has shipped{} and should arrive on {eta}.",
                order
                    .carrier
                    .as_ref()
                    .map(|c| format!(" with {c}"))
                    .unwrap_or_default()
            ),
            ("delivered", _) => format!("Order {id} has been delivered."),
            (status, Some(eta)) => format!("Order {id} is {status}; expected delivery {eta}."),
            (status, None) => format!("Order {id} is {status}."),
        };
        Ok(Outcome::new(order).reply(reply).variable("order_id", &id))
    }
}

callout_guest::export_action!(OrderStatus);
