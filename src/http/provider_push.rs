//! What a suite's command pushes and a component's events share once they
//! are verified and decrypted (API.md §7): their required fields, the
//! answer, and how they are stored: to the provider's subscriptions, or,
//! holding an authorization code (sealed), to the provider's exchange
//! first.

use actix_web::HttpResponse;
use serde_json::{json, Map, Value};

use super::error::CallbackError;
use super::AppState;
use crate::delivery::fan_out::{fan_out, Origin};
use crate::delivery::identity::push_dedup_key;
use crate::delivery::webhook::delivery_body;
use crate::domain::{CorpId, EventId, Provider, Secret, Ticket};
use crate::providers::exchange_target;
use crate::store::{InsertOutcome, NewDelivery, NewEvent, PayloadKind, Providers};

/// The words a provider's pushes use for what the manager acts on.
pub(super) struct Vocabulary {
    /// The `InfoType` of a ticket, the field WeChat stamps it with, and the ticket's field.
    pub ticket: (&'static str, &'static str, &'static str),
    /// The `InfoType`s that carry an authorization code, and its field.
    pub authorizations: (&'static [&'static str], &'static str),
    /// The `InfoType` of a customer's withdrawal, and the field naming the customer.
    pub withdrawal: (&'static str, &'static str),
    /// The delivered body's `sourceKind`.
    pub source_kind: &'static str,
}

/// A WeCom suite's command pushes (§7.1).
pub(super) const SUITE: Vocabulary = Vocabulary {
    ticket: ("suite_ticket", "TimeStamp", "SuiteTicket"),
    authorizations: (&["create_auth", "reset_permanent_code"], "AuthCode"),
    withdrawal: ("cancel_auth", "AuthCorpId"),
    source_kind: "wecom_suite",
};

/// An Open Platform component's events (§7.2).
pub(super) const COMPONENT: Vocabulary = Vocabulary {
    ticket: (
        "component_verify_ticket",
        "CreateTime",
        "ComponentVerifyTicket",
    ),
    authorizations: (&["authorized", "updateauthorized"], "AuthorizationCode"),
    withdrawal: ("unauthorized", "AuthorizerAppid"),
    source_kind: "component",
};

/// What the manager does with a provider's push before answering: keep a
/// ticket, end a grant, or hand a code to the exchange (sealed, and out of
/// what subscribers see); then store it.
pub(super) async fn handle_push(
    state: &AppState,
    provider: &Provider,
    words: &Vocabulary,
    mut fields: Map<String, Value>,
) -> Result<InsertOutcome, CallbackError> {
    let info_type = field(&fields, "InfoType")?.to_owned();
    // A resend decrypts to the same fields, secrets included.
    let dedup_key = push_dedup_key(provider.id(), &fields);
    let mut sealed_code = None;
    let (ticket_type, stamp, ticket_field) = words.ticket;
    let (authorizations, code_field) = words.authorizations;
    let (withdrawal, customer_field) = words.withdrawal;
    if info_type == ticket_type {
        let issued = field(&fields, stamp)?
            .parse::<i64>()
            .map_err(|_| CallbackError::BadRequest(format!("{stamp} is not a number")))?;
        let ticket = Ticket {
            value: Secret::new(field(&fields, ticket_field)?),
            issued,
            received_at: state.clock.now(),
        };
        state.store.keep_ticket(provider, &ticket).await?;
        fields.remove(ticket_field);
    } else if authorizations.contains(&info_type.as_str()) {
        let code = field(&fields, code_field)?.to_owned();
        sealed_code = Some(state.store.sealer().seal(&code));
        fields.remove(code_field);
    } else if info_type == withdrawal {
        let customer = CorpId::parse(field(&fields, customer_field)?)
            .map_err(|e| CallbackError::BadRequest(e.to_string()))?;
        state
            .providers
            .end_grant(provider, customer.as_str())
            .await
            .map_err(CallbackError::StoreUnavailable)?;
    }
    store_command(
        state,
        provider,
        words.source_kind,
        fields,
        dedup_key,
        sealed_code,
    )
    .await
}

/// `success`, as WeChat expects it.
pub(super) fn success() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain")
        .body("success")
}

/// A required field of a provider's push.
pub(super) fn field<'a>(
    fields: &'a Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, CallbackError> {
    fields
        .get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 1024)
        .ok_or_else(|| CallbackError::BadRequest(format!("{name} missing from the push")))
}

/// Store a provider's push (its secrets already taken out of `fields`):
/// delivered to the provider's subscriptions, or, with `sealed_code`, to
/// its exchange, which announces it to them once the code is exchanged.
async fn store_command(
    state: &AppState,
    provider: &Provider,
    source_kind: &'static str,
    fields: Map<String, Value>,
    dedup_key: String,
    sealed_code: Option<String>,
) -> Result<InsertOutcome, CallbackError> {
    let source =
        CorpId::parse(provider.id()).map_err(|e| CallbackError::BadRequest(e.to_string()))?;
    let id = EventId::generate();
    let received_at = state.clock.now();
    let origin = Origin {
        event_id: id.as_str(),
        source: &source,
        source_kind,
        received_at,
        via: None,
    };
    let (deliveries, message, body) = match sealed_code {
        // Subscribers get it once the exchange has ended (with its outcome).
        Some(sealed) => (
            vec![NewDelivery::to_subscription(
                source.clone(),
                &exchange_target(provider),
            )],
            Some(delivery_body(&origin, &fields)),
            json!({ "authCode": sealed }).to_string().into_bytes(),
        ),
        None => {
            let routed = fan_out(&state.directory.get(), &origin, Some(&fields), None);
            (routed.deliveries, routed.message, Vec::new())
        }
    };
    let event = NewEvent {
        id,
        source: source.as_str().to_owned(),
        dedup_key,
        kind: PayloadKind::Json,
        body,
        query: String::new(),
        received_at,
        message,
        deliveries,
    };
    Ok(state.dispatcher.enqueue(event).await?)
}
