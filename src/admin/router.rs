//! Method + path -> handler, with an access check per route: the admin
//! endpoints are open (loopback by default), the `/api/*` endpoints (api.rs)
//! require `Authorization: Bearer <admin key>`. `admit` judges a request
//! from its head alone, so the session reads a body only for a route that
//! will take it.

use super::http::{Request, Response};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone who reaches the admin port (probes, Prometheus).
    Open,
    /// Only callers presenting the admin key as a bearer token.
    Bearer,
}

pub(crate) type Handler = Box<dyn Fn(&Request) -> Response + Send + Sync>;

struct Route {
    method: &'static str,
    path: &'static str,
    access: Access,
    handler: Handler,
}

/// The admin port's routes. Paths match exactly, or by prefix when the
/// registered path ends in `/*`.
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
    api_key: Option<String>,
}

impl Router {
    pub fn new(api_key: Option<String>) -> Router {
        Router {
            routes: Vec::new(),
            api_key,
        }
    }

    pub fn route(
        mut self,
        method: &'static str,
        path: &'static str,
        access: Access,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> Router {
        self.routes.push(Route {
            method,
            path,
            access,
            handler: Box::new(handler),
        });
        self
    }

    /// Judges `request` from its head alone, before any body is read:
    /// `Ok(access)` of the route that will answer it, or the answer itself
    /// (404, 405, 401) so that an unknown or unauthorized caller never gets
    /// to send a body.
    pub(crate) fn admit(&self, request: &Request) -> Result<Access, Response> {
        self.find(request).map(|route| route.access)
    }

    /// Answers `request`: 404 for an unknown path, 405 for a known path with
    /// another method, 401 without the right bearer token.
    pub(crate) fn dispatch(&self, request: &Request) -> Response {
        match self.find(request) {
            Ok(route) => (route.handler)(request),
            Err(refusal) => refusal,
        }
    }

    fn find(&self, request: &Request) -> Result<&Route, Response> {
        // HEAD is served as GET without the body (the caller drops it).
        let method = if request.method == "HEAD" {
            "GET"
        } else {
            request.method.as_str()
        };
        let mut path_known = false;
        for route in &self.routes {
            if !path_matches(route.path, &request.path) {
                continue;
            }
            path_known = true;
            if route.method != method {
                continue;
            }
            if route.access == Access::Bearer && !self.authorized(request) {
                return Err(Response::text(401, "missing or wrong bearer token\n"));
            }
            return Ok(route);
        }
        if path_known {
            Err(Response::text(405, "method not allowed\n"))
        } else {
            Err(Response::text(404, "not found\n"))
        }
    }

    fn authorized(&self, request: &Request) -> bool {
        let Some(key) = self.api_key.as_deref() else {
            return false; // no key configured: the API stays closed
        };
        let Some(token) = request.header("authorization").and_then(|v| v.strip_prefix("Bearer ")) else {
            return false;
        };
        constant_time_eq(token.trim().as_bytes(), key.as_bytes())
    }
}

fn path_matches(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => pattern == path,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, auth: Option<&str>) -> Request {
        let mut r = Request {
            method: method.into(),
            path: path.into(),
            ..Request::default()
        };
        if let Some(a) = auth {
            r.headers.push(("Authorization".into(), a.into()));
        }
        r
    }

    fn router() -> Router {
        Router::new(Some("k3y".into()))
            .route("GET", "/healthz", Access::Open, |_| Response::text(200, "ok"))
            .route("POST", "/api/*", Access::Bearer, |r| {
                Response::text(200, r.path.clone())
            })
    }

    #[test]
    fn routes_by_method_and_path() {
        let r = router();
        assert_eq!(r.dispatch(&req("GET", "/healthz", None)).status, 200);
        assert_eq!(r.dispatch(&req("HEAD", "/healthz", None)).status, 200);
        assert_eq!(r.dispatch(&req("POST", "/healthz", None)).status, 405);
        assert_eq!(r.dispatch(&req("GET", "/nope", None)).status, 404);
    }

    #[test]
    fn bearer_routes_need_the_key() {
        let r = router();
        assert_eq!(r.dispatch(&req("POST", "/api/x", None)).status, 401);
        assert_eq!(r.dispatch(&req("POST", "/api/x", Some("Bearer nope"))).status, 401);
        assert_eq!(r.dispatch(&req("POST", "/api/x", Some("Bearer k3y"))).status, 200);
        let closed = Router::new(None).route("GET", "/api/y", Access::Bearer, |_| Response::text(200, ""));
        assert_eq!(closed.dispatch(&req("GET", "/api/y", Some("Bearer "))).status, 401);
    }

    #[test]
    fn admission_answers_from_the_head() {
        let r = router();
        assert_eq!(r.admit(&req("GET", "/healthz", None)).unwrap(), Access::Open);
        assert_eq!(
            r.admit(&req("POST", "/api/x", Some("Bearer k3y"))).unwrap(),
            Access::Bearer
        );
        assert_eq!(r.admit(&req("POST", "/api/x", None)).unwrap_err().status, 401);
        assert_eq!(r.admit(&req("PUT", "/healthz", None)).unwrap_err().status, 405);
        assert_eq!(r.admit(&req("GET", "/nope", None)).unwrap_err().status, 404);
    }
}
