//! Endpoints a client can upgrade on. The handshake resolves the request
//! target to a `Route`; the shard dispatches messages by it.

/// Where a connection's messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /echo`: every message comes back unchanged on the same connection.
    Echo,
}

impl Route {
    /// Resolves a request target (path and optional query) to a route.
    pub fn from_target(target: &str) -> Option<Route> {
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        match path {
            "/echo" => Some(Route::Echo),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_with_or_without_query() {
        assert_eq!(Route::from_target("/echo"), Some(Route::Echo));
        assert_eq!(Route::from_target("/echo?x=1"), Some(Route::Echo));
        assert_eq!(Route::from_target("/echo/"), None);
        assert_eq!(Route::from_target("/"), None);
    }
}
