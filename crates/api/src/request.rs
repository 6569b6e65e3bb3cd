//! Parsing request bodies into validated commands, collecting every field error at once.

use crate::problem::{FieldError, Problem};
use domain::{Capacity, GuestId, RegionName, Seats, ShardCount, SlotId, ValidationError};
use http::{HeaderMap, StatusCode, header};
use serde::Serialize;
use serde_json::{Map, Value};

/// Request bodies above this size are refused with 413 before parsing.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreateReservation {
    pub slot_id: SlotId,
    pub guest_id: GuestId,
    pub seats: Seats,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PutSlot {
    pub capacity: Capacity,
    /// With several Regions: the Region a new slot is at home in (the primary when absent).
    pub home_region: Option<RegionName>,
    /// How many inventory items a new slot's seats are split over (one when absent); on an
    /// existing slot it must be the count it has.
    pub shards: Option<ShardCount>,
}

/// Accepts `application/json` and any `+json` media type, with or without parameters.
pub fn require_json(headers: &HeaderMap) -> Result<(), Problem> {
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    match media_type.as_deref() {
        Some("application/json") => Ok(()),
        Some(t) if t.starts_with("application/") && t.ends_with("+json") => Ok(()),
        other => Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "send the body as application/json (got {})",
                other.unwrap_or("no Content-Type")
            ),
        )
        .with_header(header::HeaderName::from_static("accept-post"), "application/json")),
    }
}

pub fn check_size(body: &[u8]) -> Result<(), Problem> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is {} bytes; the limit is {MAX_BODY_BYTES}", body.len()),
        ));
    }
    Ok(())
}

fn json_object(body: &[u8]) -> Result<Map<String, Value>, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "a JSON object body is required",
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("body is not valid JSON: {e}"),
        )
    })?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(Problem::validation(vec![FieldError {
            field: "body".into(),
            message: "must be a JSON object".into(),
        }])),
    }
}

/// Field-by-field reading that remembers every problem, so one answer names them all.
struct Fields {
    map: Map<String, Value>,
    errors: Vec<FieldError>,
}

impl Fields {
    fn integer<T>(&mut self, field: &'static str, build: impl Fn(i64) -> Result<T, ValidationError>) -> Option<T> {
        let result = match self.map.get(field) {
            None | Some(Value::Null) => Err(ValidationError::new(field, "is required")),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => build(i),
                None => Err(ValidationError::new(field, "must be a whole number")),
            },
            Some(_) => Err(ValidationError::new(field, "must be a whole number")),
        };
        self.keep(result)
    }

    fn string<T>(&mut self, field: &'static str, build: impl Fn(String) -> Result<T, ValidationError>) -> Option<T> {
        let result = match self.map.get(field) {
            None | Some(Value::Null) => Err(ValidationError::new(field, "is required")),
            Some(Value::String(s)) => build(s.clone()),
            Some(_) => Err(ValidationError::new(field, "must be a string")),
        };
        self.keep(result)
    }

    /// A whole-number field that may be absent (or null).
    fn optional_integer<T>(
        &mut self,
        field: &'static str,
        build: impl Fn(i64) -> Result<T, ValidationError>,
    ) -> Option<Option<T>> {
        match self.map.get(field) {
            None | Some(Value::Null) => Some(None),
            Some(_) => self.integer(field, build).map(Some),
        }
    }

    /// A string field that may be absent (or null).
    fn optional_string<T>(
        &mut self,
        field: &'static str,
        build: impl Fn(String) -> Result<T, ValidationError>,
    ) -> Option<Option<T>> {
        match self.map.get(field) {
            None | Some(Value::Null) => Some(None),
            Some(_) => self.string(field, build).map(Some),
        }
    }

    fn keep<T>(&mut self, result: Result<T, ValidationError>) -> Option<T> {
        result.map_err(|e| self.errors.push(e.into())).ok()
    }

    fn finish<T>(self, value: Option<T>) -> Result<T, Problem> {
        match value {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ => Err(Problem::validation(self.errors)),
        }
    }
}

pub fn parse_create_reservation(body: &[u8]) -> Result<CreateReservation, Problem> {
    let mut fields = Fields {
        map: json_object(body)?,
        errors: Vec::new(),
    };
    let slot_id = fields.string("slot_id", SlotId::parse);
    let guest_id = fields.string("guest_id", GuestId::parse);
    let seats = fields.integer("seats", Seats::new);
    let parsed = match (slot_id, guest_id, seats) {
        (Some(slot_id), Some(guest_id), Some(seats)) => Some(CreateReservation {
            slot_id,
            guest_id,
            seats,
        }),
        _ => None,
    };
    fields.finish(parsed)
}

pub fn parse_put_slot(body: &[u8]) -> Result<PutSlot, Problem> {
    let mut fields = Fields {
        map: json_object(body)?,
        errors: Vec::new(),
    };
    let capacity = fields.integer("capacity", Capacity::new);
    let home_region = fields.optional_string("home_region", RegionName::parse);
    let shards = fields.optional_integer("shards", ShardCount::new);
    let parsed = match (capacity, home_region, shards) {
        (Some(capacity), Some(home_region), Some(shards)) => Some(PutSlot {
            capacity,
            home_region,
            shards,
        }),
        _ => None,
    };
    fields.finish(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_reservation_body_parses() {
        let parsed =
            parse_create_reservation(br#"{"slot_id":"s1","guest_id":"g1","seats":2,"note":"ignored"}"#).unwrap();
        assert_eq!(parsed.seats.get(), 2);
        assert_eq!(parsed.slot_id.as_str(), "s1");
    }

    #[test]
    fn every_invalid_field_is_named_at_once() {
        let problem = parse_create_reservation(br#"{"slot_id":"","seats":"two"}"#).unwrap_err();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.code, "validation_failed");
        let fields: Vec<_> = problem.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["slot_id", "guest_id", "seats"]);
    }

    #[test]
    fn malformed_json_is_400_and_non_objects_are_422() {
        assert_eq!(parse_create_reservation(b"{not json").unwrap_err().status, 400);
        assert_eq!(parse_create_reservation(b"").unwrap_err().status, 400);
        assert_eq!(parse_create_reservation(b"[1,2]").unwrap_err().status, 422);
        assert_eq!(
            parse_put_slot(br#"{"capacity": 1.5}"#).unwrap_err().errors[0].field,
            "capacity"
        );
        assert_eq!(
            parse_put_slot(br#"{"capacity": 99999999999999999999}"#)
                .unwrap_err()
                .status,
            422
        );
    }

    #[test]
    fn a_slot_may_name_its_shards_one_to_sixty_four() {
        assert_eq!(parse_put_slot(br#"{"capacity": 10}"#).unwrap().shards, None);
        let parsed = parse_put_slot(br#"{"capacity": 10, "shards": 16}"#).unwrap();
        assert_eq!(parsed.shards.map(ShardCount::get), Some(16));
        for bad in [
            r#"{"capacity": 10, "shards": 0}"#,
            r#"{"capacity": 10, "shards": 65}"#,
            r#"{"capacity": 10, "shards": "4"}"#,
        ] {
            assert_eq!(
                parse_put_slot(bad.as_bytes()).unwrap_err().errors[0].field,
                "shards",
                "{bad}"
            );
        }
    }

    #[test]
    fn content_type_must_be_json() {
        let mut headers = HeaderMap::new();
        assert_eq!(require_json(&headers).unwrap_err().status, 415);
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert_eq!(require_json(&headers).unwrap_err().status, 415);
        headers.insert(header::CONTENT_TYPE, "Application/JSON; charset=utf-8".parse().unwrap());
        assert!(require_json(&headers).is_ok());
        headers.insert(header::CONTENT_TYPE, "application/merge-patch+json".parse().unwrap());
        assert!(require_json(&headers).is_ok());
    }

    #[test]
    fn bodies_over_the_limit_are_413() {
        assert!(check_size(&vec![b' '; MAX_BODY_BYTES]).is_ok());
        assert_eq!(check_size(&vec![b' '; MAX_BODY_BYTES + 1]).unwrap_err().status, 413);
    }
}

/// Page size of `GET /guests/{guest_id}/reservations` when `limit` is absent, and its maximum.
pub const DEFAULT_PAGE_LIMIT: u32 = 20;
pub const MAX_PAGE_LIMIT: u32 = 100;

/// An opaque cursor for the page after `last` (today its id, base64url; clients must not rely
/// on that).
pub fn cursor_for(last: &domain::ReservationId) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last.as_str())
}

fn reservation_after(cursor: &str) -> Option<domain::ReservationId> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
    domain::ReservationId::parse(String::from_utf8(bytes).ok()?).ok()
}

/// `limit` and `cursor` from a query string; other parameters are ignored. Every bad one is
/// reported at once.
pub fn parse_page(query: Option<&str>) -> Result<domain::ports::PageRequest, Problem> {
    let mut page = domain::ports::PageRequest {
        limit: DEFAULT_PAGE_LIMIT,
        after: None,
    };
    let mut errors = Vec::new();
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "limit" => match value.parse::<u32>() {
                Ok(limit) if (1..=MAX_PAGE_LIMIT).contains(&limit) => page.limit = limit,
                _ => errors.push(FieldError {
                    field: "limit".into(),
                    message: format!("must be a whole number from 1 to {MAX_PAGE_LIMIT}"),
                }),
            },
            "cursor" => match reservation_after(value) {
                Some(after) => page.after = Some(after),
                None => errors.push(FieldError {
                    field: "cursor".into(),
                    message: "is not a cursor this API returned (use next_cursor as given)".into(),
                }),
            },
            _ => {}
        }
    }
    if errors.is_empty() {
        Ok(page)
    } else {
        Err(Problem::validation(errors))
    }
}

#[cfg(test)]
mod page_tests {
    use super::*;

    #[test]
    fn limit_and_cursor_round_trip_and_bad_ones_are_all_reported() {
        let id = domain::ReservationId::parse("01M86HSXN78B6ZNGFC2VWR5112").unwrap();
        let query = format!("limit=5&cursor={}&other=1", cursor_for(&id));
        let page = parse_page(Some(&query)).unwrap();
        assert_eq!((page.limit, page.after), (5, Some(id)));
        assert_eq!(parse_page(None).unwrap().limit, DEFAULT_PAGE_LIMIT);

        let problem = parse_page(Some("limit=0&cursor=%%%")).unwrap_err();
        assert_eq!(problem.code, "validation_failed");
        let fields: Vec<&str> = problem.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["limit", "cursor"]);
    }
}
