//! Endpoints a client can upgrade on. The handshake resolves the request
//! target to an `Endpoint`; once the shard has placed the connection (a room
//! joined, say) the connection keeps a small `Route`.

use crate::auth::pattern::valid_channel_name;

/// What the request target asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /echo`: every message comes back unchanged on the same connection.
    Echo,
    /// `GET /room/{name}`: join room `name` (a channel name, see
    /// `auth::pattern::valid_channel_name`); every message a member sends
    /// goes, as is, to every member on every shard, the sender included.
    Room(Box<str>),
    /// `GET /ws`: the JSON command protocol (docs/PROTOCOL.md).
    Ws,
    /// `GET /connection/websocket`: the Centrifuge client protocol, JSON
    /// encoding (docs/PROTOCOL.md, "Centrifuge protocol"); the token comes
    /// in its `connect` command, not with the upgrade.
    Centrifuge,
}

/// Where an upgraded connection's messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Echo,
    /// A room member (the hub keeps which room: a connection stays small).
    Room,
    Ws,
    Centrifuge,
}

/// Why a target was not accepted (the handshake answers 404 or 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetError {
    NotFound,
    BadName(&'static str),
}

impl Endpoint {
    /// Resolves a request target (path and optional query) to an endpoint.
    pub(crate) fn from_target(target: &str) -> Result<Endpoint, TargetError> {
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        match path {
            "/echo" => return Ok(Endpoint::Echo),
            "/ws" => return Ok(Endpoint::Ws),
            "/connection/websocket" => return Ok(Endpoint::Centrifuge),
            _ => {}
        }
        if let Some(name) = path.strip_prefix("/room/") {
            valid_channel_name(name).map_err(TargetError::BadName)?;
            return Ok(Endpoint::Room(name.into()));
        }
        Err(TargetError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_with_or_without_query() {
        assert_eq!(Endpoint::from_target("/echo"), Ok(Endpoint::Echo));
        assert_eq!(Endpoint::from_target("/echo?x=1"), Ok(Endpoint::Echo));
        assert_eq!(Endpoint::from_target("/echo/"), Err(TargetError::NotFound));
        assert_eq!(Endpoint::from_target("/"), Err(TargetError::NotFound));
    }

    #[test]
    fn the_centrifuge_endpoint_is_its_own() {
        assert_eq!(
            Endpoint::from_target("/connection/websocket?cf_protocol_version=v2"),
            Ok(Endpoint::Centrifuge)
        );
        assert_eq!(
            Endpoint::from_target("/connection/websocket/"),
            Err(TargetError::NotFound)
        );
    }

    #[test]
    fn rooms_carry_a_checked_name() {
        assert_eq!(
            Endpoint::from_target("/room/lobby?token=x"),
            Ok(Endpoint::Room("lobby".into()))
        );
        assert_eq!(
            Endpoint::from_target("/room/team:a/b"),
            Ok(Endpoint::Room("team:a/b".into()))
        );
        assert!(matches!(Endpoint::from_target("/room/"), Err(TargetError::BadName(_))));
        assert!(matches!(
            Endpoint::from_target("/room/a%20b"),
            Err(TargetError::BadName(_))
        ));
        let long = format!("/room/{}", "x".repeat(129));
        assert!(matches!(Endpoint::from_target(&long), Err(TargetError::BadName(_))));
    }
}
