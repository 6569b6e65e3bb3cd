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
    shards: u16,
}

impl<'a> From<&'a Slot> for SlotView<'a> {
    fn from(slot: &'a Slot) -> Self {
        Self {
            slot_id: &slot.slot_id,
            capacity: slot.capacity.get(),
            reserved: slot.reserved,
            available: slot.available(),
            shards: slot.shards.get(),
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
        tracing::info_span!("request", request_id = %request_id, method = %req.method(), path = %route_path(&req));
    async {
        let mut response = match app.dispatch(&req).await {
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

/// What the business counts, as EMF metrics of the `api` function.
enum BusinessMetric<'a> {
    ReservationCreated {
        reservation_id: &'a ReservationId,
        trace_id: &'a TraceId,
    },
    SoldOut {
        slot_id: &'a SlotId,
    },
}

/// One function per route: each authorizes, parses, runs its use case and answers. The checks
/// run in the order a client would fix them: who you are, then what you sent.
impl<S, G> App<S, G>
where
    S: SlotStore + ReservationStore + IdempotencyStore,
    G: GuestReservationsReader,
{
    async fn dispatch(&self, req: &Request) -> Result<Response<Body>, Problem> {
        let matched = routes::route(req.method(), route_path(req)).map_err(|e| route_problem(e, req))?;
        let param = matched.param.unwrap_or_default();
        let caller = Caller::of(&self.auth, req)?;
        match matched.route {
            RouteId::PutSlot => self.put_slot(req, &caller, param).await,
            RouteId::GetSlot => self.get_slot(param).await,
            RouteId::CreateReservation => self.create_reservation(req, &caller).await,
            RouteId::GetReservation => self.get_reservation(&caller, param).await,
            RouteId::CancelReservation => self.cancel_reservation(req, &caller, param).await,
            RouteId::ListGuestReservations => self.list_guest_reservations(req, &caller, param).await,
        }
    }

    async fn put_slot(&self, req: &Request, caller: &Caller, param: &str) -> Result<Response<Body>, Problem> {
        if !caller.may_manage_slots() {
            return Err(forbidden("only an admin creates or resizes slots"));
        }
        let slot_id = SlotId::parse(param).map_err(|e| Problem::validation(vec![e.into()]))?;
        let command = request::parse_put_slot(json_body(req)?)?;
        match self
            .service
            .put_slot(&slot_id, command)
            .await
            .map_err(service_problem)?
        {
            SlotWrite::Created(slot) => Ok(json(StatusCode::CREATED, &SlotView::from(&slot))),
            SlotWrite::Updated(slot) => Ok(json(StatusCode::OK, &SlotView::from(&slot))),
        }
    }

    async fn get_slot(&self, param: &str) -> Result<Response<Body>, Problem> {
        let slot_id = SlotId::parse(param).map_err(|_| slot_not_found(param))?;
        let slot = self.service.get_slot(&slot_id).await.map_err(service_problem)?;
        Ok(json(StatusCode::OK, &SlotView::from(&slot)))
    }

    async fn create_reservation(&self, req: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let command = request::parse_create_reservation(json_body(req)?)?;
        if !caller.may_act_for(&command.guest_id) {
            return Err(forbidden(
                "a guest books for themself: guest_id must be the token's subject",
            ));
        }
        let key = idempotency_key(req.headers())?.map(|key| caller.own_key(key));
        let replayable = key.is_some();
        let trace_id = trace_id(req.headers());
        let outcome = match self.service.create_reservation(command, key, trace_id.clone()).await {
            Ok(outcome) => outcome,
            Err(e) => {
                if let ServiceError::SoldOut { slot_id } = &e {
                    self.count(BusinessMetric::SoldOut { slot_id });
                }
                return Err(service_problem(e));
            }
        };
        match outcome {
            CreateOutcome::Created(reservation) => {
                tracing::info!(reservation_id = %reservation.reservation_id, slot_id = %reservation.slot_id, seats = reservation.seats.get(), %trace_id, replayable, "reservation created");
                self.count(BusinessMetric::ReservationCreated {
                    reservation_id: &reservation.reservation_id,
                    trace_id: &trace_id,
                });
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

    async fn get_reservation(&self, caller: &Caller, param: &str) -> Result<Response<Body>, Problem> {
        let id = ReservationId::parse(param).map_err(|_| reservation_not_found(param))?;
        let reservation = self.service.get_reservation(&id).await.map_err(service_problem)?;
        if !caller.may_act_for(&reservation.guest_id) {
            return Err(not_yours());
        }
        Ok(json(StatusCode::OK, &reservation))
    }

    async fn cancel_reservation(&self, req: &Request, caller: &Caller, param: &str) -> Result<Response<Body>, Problem> {
        // Cancel takes no body; a large one is still refused so nobody streams megabytes at us.
        request::check_size(body_bytes(req.body()))?;
        let id = ReservationId::parse(param).map_err(|_| reservation_not_found(param))?;
        if let Caller::Guest(_) = caller {
            // Only a guest can be refused: look before cancelling.
            let reservation = self.service.get_reservation(&id).await.map_err(service_problem)?;
            if !caller.may_act_for(&reservation.guest_id) {
                return Err(not_yours());
            }
        }
        let cancelled = self
            .service
            .cancel_reservation(&id, trace_id(req.headers()))
            .await
            .map_err(service_problem)?;
        tracing::info!(reservation_id = %cancelled.reservation_id, version = %cancelled.version, "reservation cancelled");
        Ok(json(StatusCode::OK, &cancelled))
    }

    async fn list_guest_reservations(
        &self,
        req: &Request,
        caller: &Caller,
        param: &str,
    ) -> Result<Response<Body>, Problem> {
        let guest_id = GuestId::parse(param).map_err(|e| Problem::validation(vec![e.into()]))?;
        if !caller.may_act_for(&guest_id) {
            return Err(forbidden("a guest reads only their own reservations"));
        }
        let page = request::parse_page(req.uri().query())?;
        let found = self
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

    /// The one place business metrics are built and emitted.
    fn count(&self, metric: BusinessMetric) {
        let mut metrics = telemetry::metrics("api");
        match metric {
            BusinessMetric::ReservationCreated {
                reservation_id,
                trace_id,
            } => metrics
                .count("ReservationsCreated", 1.0)
                .property("reservation_id", reservation_id.as_str())
                .property("trace_id", trace_id.to_string()),
            BusinessMetric::SoldOut { slot_id } => metrics.count("SoldOut", 1.0).property("slot_id", slot_id.as_str()),
        };
        self.metrics.emit(&metrics);
    }
}

/// A JSON body within the size limit, as bytes.
fn json_body(req: &Request) -> Result<&[u8], Problem> {
    request::require_json(req.headers())?;
    let body = body_bytes(req.body());
    request::check_size(body)?;
    Ok(body)
}

/// The path the routes match: the request's path as the client sent it. A REST API's request
/// carries its stage too, which lambda_http puts in front of the URI's path ("/prod/slots/..."),
/// so the raw path wins where the event has one; the local server's requests have only the URI.
fn route_path(req: &Request) -> &str {
    match req.raw_http_path() {
        "" => req.uri().path(),
        raw => raw,
    }
}

fn route_problem(error: RouteError, req: &Request) -> Problem {
    match error {
        RouteError::NotFound => Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {}", route_path(req)),
        ),
        RouteError::MethodNotAllowed { allowed } => Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} is not allowed here; use {}", req.method(), allowed.join(", ")),
        )
        .with_header(header::ALLOW, allowed.join(", ")),
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
        ServiceError::HomedElsewhere { ref region, .. } => {
            let mut problem = Problem::new(StatusCode::MISDIRECTED_REQUEST, "wrong_region", err.to_string());
            problem.home_region = Some(region.clone());
            problem
        }
        ServiceError::CreatedInPrimary { ref primary, .. } => {
            let mut problem = Problem::new(StatusCode::MISDIRECTED_REQUEST, "wrong_region", err.to_string());
            problem.home_region = Some(primary.clone());
            problem
        }
        ServiceError::HomeDiffers { ref home, .. } => {
            let mut problem = Problem::new(StatusCode::CONFLICT, "home_differs", err.to_string());
            problem.home_region = Some(home.clone());
            problem
        }
        ServiceError::UnknownRegion { .. } => Problem::validation(vec![crate::problem::FieldError {
            field: "home_region".into(),
            message: err.to_string(),
        }]),
        // Every Region refuses the slot's writes while its home moves; the move takes seconds.
        ServiceError::HomeMoving { ref to, .. } => {
            let mut problem = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "home_moving", err.to_string());
            problem.home_region = Some(to.clone());
            problem.with_header(header::RETRY_AFTER, "1")
        }
        ServiceError::IdempotencyKeyReused => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request; use a new key for a new request",
        ),
        // Contention is transient: retrying cannot make a sold-out slot bookable, but it can get
        // past a conflict. Too many requests for the same slot at once: a 429 to try again after
        // `Retry-After`, never a 409, and no 5xx (the service is well, the slot is busy).
        ServiceError::Contended { attempts } => {
            tracing::warn!(attempts, "giving up after repeated transaction conflicts");
            Problem::new(StatusCode::TOO_MANY_REQUESTS, "contended", err.to_string())
                .with_header(header::RETRY_AFTER, "1")
        }
        ServiceError::ShardsDiffer { .. } => Problem::new(StatusCode::CONFLICT, "shards_differ", err.to_string()),
        ServiceError::Store(e) if e.kind == StoreErrorKind::Throttled => {
            tracing::warn!(operation = e.operation, aws_request_id = ?e.aws_request_id, error = %telemetry::error_chain(&e), "store throttled");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "throttled",
                "the service is busy; retry shortly",
            )
            .with_header(header::RETRY_AFTER, "1")
        }
        ServiceError::Store(e) => {
            tracing::error!(operation = e.operation, aws_request_id = ?e.aws_request_id, error = %telemetry::error_chain(&e), "store failure");
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "an unexpected error occurred; quote the request_id when reporting it",
            )
        }
    }
}
