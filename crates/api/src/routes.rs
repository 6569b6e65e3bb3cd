//! The route table. It is the single list the router matches against and the OpenAPI contract
//! test compares with `openapi/openapi.yaml`, so a route cannot exist undocumented.

use http::Method;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteId {
    PutSlot,
    GetSlot,
    CreateReservation,
    GetReservation,
    CancelReservation,
    ListGuestReservations,
}

/// Every (method, path template) the API serves.
pub const ROUTES: &[(&str, &str, RouteId)] = &[
    ("PUT", "/slots/{slot_id}", RouteId::PutSlot),
    ("GET", "/slots/{slot_id}", RouteId::GetSlot),
    ("POST", "/reservations", RouteId::CreateReservation),
    ("GET", "/reservations/{reservation_id}", RouteId::GetReservation),
    (
        "POST",
        "/reservations/{reservation_id}/cancel",
        RouteId::CancelReservation,
    ),
    ("GET", "/guests/{guest_id}/reservations", RouteId::ListGuestReservations),
];

#[derive(Debug, PartialEq, Eq)]
pub struct Matched<'a> {
    pub route: RouteId,
    /// The single `{param}` of the template, if any, as it appeared in the path.
    pub param: Option<&'a str>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum RouteError {
    NotFound,
    MethodNotAllowed { allowed: Vec<&'static str> },
}

fn matches<'a>(template: &str, path: &'a str) -> Option<Option<&'a str>> {
    let mut param = None;
    let mut template_parts = template.split('/');
    let mut path_parts = path.split('/');
    loop {
        match (template_parts.next(), path_parts.next()) {
            (None, None) => return Some(param),
            (Some(t), Some(p)) if t.starts_with('{') && t.ends_with('}') => {
                if p.is_empty() {
                    return None;
                }
                param = Some(p);
            }
            (Some(t), Some(p)) if t == p => {}
            _ => return None,
        }
    }
}

pub fn route<'a>(method: &Method, path: &'a str) -> Result<Matched<'a>, RouteError> {
    let mut allowed = Vec::new();
    for (route_method, template, id) in ROUTES {
        if let Some(param) = matches(template, path) {
            if method.as_str() == *route_method {
                return Ok(Matched { route: *id, param });
            }
            allowed.push(*route_method);
        }
    }
    if allowed.is_empty() {
        Err(RouteError::NotFound)
    } else {
        Err(RouteError::MethodNotAllowed { allowed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_their_paths_and_capture_the_parameter() {
        assert_eq!(
            route(&Method::PUT, "/slots/s-1"),
            Ok(Matched {
                route: RouteId::PutSlot,
                param: Some("s-1")
            })
        );
        assert_eq!(
            route(&Method::POST, "/reservations"),
            Ok(Matched {
                route: RouteId::CreateReservation,
                param: None
            })
        );
        assert_eq!(
            route(&Method::POST, "/reservations/r1/cancel"),
            Ok(Matched {
                route: RouteId::CancelReservation,
                param: Some("r1")
            })
        );
    }

    #[test]
    fn unknown_paths_are_not_found_and_known_paths_list_their_methods() {
        assert_eq!(route(&Method::GET, "/nope"), Err(RouteError::NotFound));
        assert_eq!(route(&Method::GET, "/slots/"), Err(RouteError::NotFound));
        assert_eq!(route(&Method::GET, "/slots/a/b"), Err(RouteError::NotFound));
        assert_eq!(
            route(&Method::DELETE, "/slots/a"),
            Err(RouteError::MethodNotAllowed {
                allowed: vec!["PUT", "GET"]
            })
        );
        assert_eq!(
            route(&Method::GET, "/reservations"),
            Err(RouteError::MethodNotAllowed { allowed: vec!["POST"] })
        );
    }
}
