//! From an HTTP request to an HTTP response: routing, parsing, the use case, and the mapping of
//! every outcome to a status and body. Shared verbatim by the Lambda and the local dev server.

use crate::auth::{AuthPolicy, Caller, forbidden};
use crate::problem::{FieldError, Problem};
use crate::request;
use crate::routes::{self, RouteError, RouteId};
use crate::service::{CreateOutcome, ReservationService, ServiceError};
use domain::ports::{
    GuestReservationsReader, IdempotencyStore, ReservationStore, SlotStore, SlotWrite, StoreErrorKind,
};
use domain::{GuestId, IdempotencyKey, Reservation, ReservationId, Slot, SlotId, TraceId};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use lambda_http::{Body, Request, RequestExt};
use serde::Serialize;
use std::error::Error as StdError;
use tracing::Instrument;

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
pub const REQUEST_ID: &str = "x-request-id";

/// Everything a request may need: the use cases on the reservations table, and the guest read
/// model the consumers build (read only).
pub struct App<S, G> {
    pub service: ReservationService<S>,
    pub guests: G,
    pub metrics: telemetry::Emitter,
    /// How callers are told apart and what each may touch; open unless set.
    pub auth: AuthPolicy,
}

impl<S, G> App<S, G> {
    pub fn new(service: ReservationService<S>, guests: G) -> Self {
        Self {
            service,
            guests,
            metrics: telemetry::Emitter::Off,
            auth: AuthPolicy::Open,
        }
    }

    /// Tells callers apart by `policy` (the deployment's AuthMode).
    pub fn with_auth(mut self, policy: AuthPolicy) -> Self {
        self.auth = policy;
        self
    }

    /// Emits business metrics (EMF): ReservationsCreated, SoldOut. Off unless set.
    pub fn with_metrics(mut self, emitter: telemetry::Emitter) -> Self {
        self.metrics = emitter;
        self
    }
}

/// A page of `GET /guests/{guest_id}/reservations`.
#[derive(Serialize)]
struct GuestReservationsPage {
    items: Vec<Reservation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

#[derive(Serialize)]
struct SlotView<'a> {
    slot_id: &'a SlotId,
    capacity: u32,
    reserved: u32,
    available: u32,
}

impl<'a> From<&'a Slot> for SlotView<'a> {
    fn from(slot: &'a Slot) -> Self {
        Self {
            slot_id: &slot.slot_id,
            capacity: slot.capacity.get(),
            reserved: slot.reserved,
            available: slot.available(),
        }
    }
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_string(value).unwrap_or_else(|_| String::from("{}"));
    raw_json(status, body)
}

fn raw_json(status: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::Text(body))
        .unwrap_or_default()
}

fn body_bytes(body: &Body) -> &[u8] {
    match body {
        Body::Empty => &[],
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        // Future body kinds: treat as empty rather than fail; parsing will then say what is missing.
        #[allow(unreachable_patterns)]
        _ => &[],
    }
}

/// The Lambda request id when running in Lambda, API Gateway's when present, a fresh one locally.
fn request_id(req: &Request) -> String {
    if let Some(ctx) = req.lambda_context_ref() {
        return ctx.request_id.clone();
    }
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| ulid::Ulid::new().to_string())
}

fn trace_id(headers: &HeaderMap) -> TraceId {
    let header = headers
        .get("x-amzn-trace-id")
        .or_else(|| headers.get("traceparent"))
        .and_then(|v| v.to_str().ok());
    TraceId::from_header_or_new(header)
}

/// Handles one request. Infallible by design: errors are answers.
pub async fn handle<S, G>(app: &App<S, G>, req: Request) -> Response<Body>
where
    S: SlotStore + ReservationStore + IdempotencyStore,
    G: GuestReservationsReader,
{
    let request_id = request_id(&req);
    let span =
        tracing::info_span!("request", request_id = %request_id, method = %req.method(), path = %req.uri().path());
    async {
        let mut response = match dispatch(app, &req).await {
            Ok(response) => response,
            Err(problem) => problem.into_response(&request_id),
        };
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(REQUEST_ID, value);
        }
        tracing::info!(status = response.status().as_u16(), "handled");
        response
    }
    .instrument(span)
    .await
}

async fn dispatch<S, G>(app: &App<S, G>, req: &Request) -> Result<Response<Body>, Problem>
where
    S: SlotStore + ReservationStore + IdempotencyStore,
    G: GuestReservationsReader,
{
    let matched = routes::route(req.method(), req.uri().path()).map_err(|e| match e {
        RouteError::NotFound => Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {}", req.uri().path()),
        ),
        RouteError::MethodNotAllowed { allowed } => Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} is not allowed here; use {}", req.method(), allowed.join(", ")),
        )
        .with_header(header::ALLOW, allowed.join(", ")),
    })?;
    let param = matched.param.unwrap_or_default();
    let body = body_bytes(req.body());
    let service = &app.service;
    let caller = Caller::of(&app.auth, req)?;

    match matched.route {
        RouteId::PutSlot => {
            if !caller.may_manage_slots() {
                return Err(forbidden("only an admin creates or resizes slots"));
            }
            let slot_id = SlotId::parse(param).map_err(|e| Problem::validation(vec![e.into()]))?;
            request::require_json(req.headers())?;
            request::check_size(body)?;
            let command = request::parse_put_slot(body)?;
            match service.put_slot(&slot_id, command).await.map_err(service_problem)? {
                SlotWrite::Created(slot) => Ok(json(StatusCode::CREATED, &SlotView::from(&slot))),
                SlotWrite::Updated(slot) => Ok(json(StatusCode::OK, &SlotView::from(&slot))),
            }
        }
        RouteId::GetSlot => {
            let slot_id = SlotId::parse(param).map_err(|_| slot_not_found(param))?;
            let slot = service.get_slot(&slot_id).await.map_err(service_problem)?;
            Ok(json(StatusCode::OK, &SlotView::from(&slot)))
        }
        RouteId::CreateReservation => {
            request::require_json(req.headers())?;
            request::check_size(body)?;
            let command = request::parse_create_reservation(body)?;
            if !caller.may_act_for(&command.guest_id) {
                return Err(forbidden(
                    "a guest books for themself: guest_id must be the token's subject",
                ));
            }
            let key = idempotency_key(req.headers())?.map(|key| caller.own_key(key));
            let replayable = key.is_some();
            let trace_id = trace_id(req.headers());
            let outcome = match service.create_reservation(command, key, trace_id.clone()).await {
                Ok(outcome) => outcome,
                Err(e) => {
                    if let ServiceError::SoldOut { slot_id } = &e {
                        let mut metrics = telemetry::MetricSet::new("api");
                        metrics.count("SoldOut", 1.0).property("slot_id", slot_id.as_str());
                        app.metrics.emit(&metrics);
                    }
                    return Err(service_problem(e));
                }
            };
            match outcome {
                CreateOutcome::Created(reservation) => {
                    tracing::info!(reservation_id = %reservation.reservation_id, slot_id = %reservation.slot_id, seats = reservation.seats.get(), %trace_id, replayable, "reservation created");
                    let mut metrics = telemetry::MetricSet::new("api");
                    metrics
                        .count("ReservationsCreated", 1.0)
                        .property("reservation_id", reservation.reservation_id.as_str())
                        .property("trace_id", trace_id.to_string());
                    app.metrics.emit(&metrics);
                    let mut response = json(StatusCode::CREATED, &reservation);
                    set_location(&mut response, &reservation.reservation_id);
                    Ok(response)
                }
                CreateOutcome::Replayed { status, body } => {
                    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                    let mut response = raw_json(status, body);
                    response
                        .headers_mut()
                        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
                    Ok(response)
                }
            }
        }
        RouteId::GetReservation => {
            let id = ReservationId::parse(param).map_err(|_| reservation_not_found(param))?;
            let reservation = service.get_reservation(&id).await.map_err(service_problem)?;
            if !caller.may_act_for(&reservation.guest_id) {
                return Err(not_yours());
            }
            Ok(json(StatusCode::OK, &reservation))
        }
        RouteId::CancelReservation => {
            // Cancel takes no body; a large one is still refused so nobody streams megabytes at us.
            request::check_size(body)?;
            let id = ReservationId::parse(param).map_err(|_| reservation_not_found(param))?;
            if let Caller::Guest(_) = caller {
                // Only a guest can be refused: look before cancelling.
                let reservation = service.get_reservation(&id).await.map_err(service_problem)?;
                if !caller.may_act_for(&reservation.guest_id) {
                    return Err(not_yours());
                }
            }
            let cancelled = service
                .cancel_reservation(&id, trace_id(req.headers()))
                .await
                .map_err(service_problem)?;
            tracing::info!(reservation_id = %cancelled.reservation_id, version = %cancelled.version, "reservation cancelled");
            Ok(json(StatusCode::OK, &cancelled))
        }
        RouteId::ListGuestReservations => {
            let guest_id = GuestId::parse(param).map_err(|e| Problem::validation(vec![e.into()]))?;
            if !caller.may_act_for(&guest_id) {
                return Err(forbidden("a guest reads only their own reservations"));
            }
            let page = request::parse_page(req.uri().query())?;
            let found = app
                .guests
                .guest_reservations(&guest_id, &page)
                .await
                .map_err(|e| service_problem(ServiceError::Store(e)))?;
            Ok(json(
                StatusCode::OK,
                &GuestReservationsPage {
                    items: found.items.into_iter().map(|i| i.reservation).collect(),
                    next_cursor: found.next_after.as_ref().map(request::cursor_for),
                },
            ))
        }
    }
}

fn set_location(response: &mut Response<Body>, id: &ReservationId) {
    if let Ok(value) = HeaderValue::from_str(&format!("/reservations/{id}")) {
        response.headers_mut().insert(header::LOCATION, value);
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, Problem> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        Problem::validation(vec![FieldError {
            field: "Idempotency-Key".into(),
            message: "must be printable ASCII".into(),
        }])
    })?;
    IdempotencyKey::parse(text)
        .map(Some)
        .map_err(|e| Problem::validation(vec![e.into()]))
}

fn not_yours() -> Problem {
    forbidden("this reservation belongs to another guest")
}

fn slot_not_found(slot_id: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "slot_not_found",
        format!("slot {slot_id:?} does not exist"),
    )
}

fn reservation_not_found(id: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "reservation_not_found",
        format!("reservation {id:?} does not exist"),
    )
}

/// The error's causes, outermost first, for one log field.
fn error_chain(err: &dyn StdError) -> String {
    let mut chain = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}

fn service_problem(err: ServiceError) -> Problem {
    match err {
        ServiceError::SlotNotFound(id) => slot_not_found(id.as_str()),
        ServiceError::ReservationNotFound(id) => reservation_not_found(id.as_str()),
        ServiceError::SoldOut { slot_id } => Problem::new(
            StatusCode::CONFLICT,
            "sold_out",
            format!("slot {slot_id} does not have that many seats left"),
        ),
        ServiceError::NotCancellable(e) => Problem::new(StatusCode::CONFLICT, "not_cancellable", e.to_string()),
        ServiceError::CapacityBelowReserved { .. } => {
            Problem::new(StatusCode::CONFLICT, "capacity_below_reserved", err.to_string())
        }
        ServiceError::IdempotencyKeyReused => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request; use a new key for a new request",
        ),
        ServiceError::Contended { attempts } => {
            tracing::warn!(attempts, "giving up after repeated transaction conflicts");
            Problem::new(StatusCode::CONFLICT, "conflict", err.to_string())
        }
        ServiceError::Store(e) if e.kind == StoreErrorKind::Throttled => {
            tracing::warn!(operation = e.operation, aws_request_id = ?e.aws_request_id, error = %error_chain(&e), "store throttled");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "throttled",
                "the service is busy; retry shortly",
            )
            .with_header(header::RETRY_AFTER, "1")
        }
        ServiceError::Store(e) => {
            tracing::error!(operation = e.operation, aws_request_id = ?e.aws_request_id, error = %error_chain(&e), "store failure");
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "an unexpected error occurred; quote the request_id when reporting it",
            )
        }
    }
}
