//! ICE-lite agent for one leg (RFC 8445 §2.5, RFC 7675), sans-IO.
//!
//! The appliance has public host candidates only and never sends checks; the
//! participant's full agent (controlling) does. This agent answers Binding
//! requests, learns which remote address is authentic, takes the pair the
//! participant nominates with USE-CANDIDATE as the leg's 5-tuple, and
//! declares the leg dead when no authenticated check has arrived for
//! [`CONSENT_TIMEOUT`] (RFC 7675 §5.1: consent expires 30 s after the last
//! successful check).
//!
//! Checks in order: the message must parse as STUN and be a Binding request
//! (anything else is dropped without an answer); unknown
//! comprehension-required attributes → 420; FINGERPRINT missing → 400, wrong
//! → dropped (not STUN of ours); USERNAME or MESSAGE-INTEGRITY missing → 400;
//! USERNAME other than `local-ufrag:remote-ufrag` → 401; MESSAGE-INTEGRITY
//! not verifying with our password → 401; ICE-CONTROLLED (the peer claims the
//! controlled role that a lite agent always has) → 487. Only a request that
//! passes all of them touches the agent's state, so a forged or
//! unauthenticated packet never admits an address.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dataplane::wire::stun::{
    self, Class, Message, BINDING_REQUEST, ERROR_BAD_REQUEST, ERROR_ROLE_CONFLICT,
    ERROR_UNAUTHENTICATED, ERROR_UNKNOWN_ATTRIBUTE, METHOD_BINDING,
};
use dataplane::wire::WireError;

/// RFC 7675: consent lapses 30 s after the last authenticated check.
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Most remote addresses remembered as validated (a browser has a handful of
/// candidates; the bound keeps memory fixed whatever arrives).
pub const MAX_VALIDATED: usize = 16;

/// Largest answer this agent writes.
pub const MAX_RESPONSE_LEN: usize = 256;

/// What happened to the agent's state because of a packet or the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceEvent {
    /// The participant nominated `remote` (first time, or a new address after
    /// a network change): media goes to and comes from there.
    Nominated {
        /// The participant's address of the selected pair.
        remote: SocketAddr,
    },
    /// No authenticated check for [`CONSENT_TIMEOUT`]: the leg is dead.
    ConsentExpired,
}

/// Why a packet was not answered with success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not a STUN message that parses.
    Malformed,
    /// A STUN message other than a Binding request (indications are
    /// keepalives; a lite agent sends no requests, so responses are stray).
    NotARequest,
    /// Wrong FINGERPRINT: not a STUN message of ours.
    BadFingerprint,
    /// 400 sent: a required attribute is missing.
    BadRequest,
    /// 401 sent: wrong USERNAME.
    UnknownUser,
    /// 401 sent: MESSAGE-INTEGRITY does not verify.
    BadIntegrity,
    /// 420 sent.
    UnknownAttribute,
    /// 487 sent.
    RoleConflict,
    /// The agent is dead; nothing is answered.
    Dead,
}

impl Rejection {
    /// The name as in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::NotARequest => "not_a_request",
            Self::BadFingerprint => "bad_fingerprint",
            Self::BadRequest => "bad_request",
            Self::UnknownUser => "unknown_user",
            Self::BadIntegrity => "bad_integrity",
            Self::UnknownAttribute => "unknown_attribute",
            Self::RoleConflict => "role_conflict",
            Self::Dead => "dead",
        }
    }
}

/// The result of [`IceLiteAgent::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// Bytes to send back to the packet's source, if any.
    pub response: Option<Vec<u8>>,
    /// `Ok(event)` for an authenticated check, `Err` with the reason
    /// otherwise.
    pub outcome: Result<Option<IceEvent>, Rejection>,
}

/// The agent of one leg.
#[derive(Debug, Clone)]
pub struct IceLiteAgent {
    local_ufrag: String,
    local_pwd: String,
    remote_ufrag: String,
    /// `local:remote`, what USERNAME must be in requests to us.
    expected_username: String,
    created: Instant,
    validated: Vec<(SocketAddr, Instant)>,
    nominated: Option<SocketAddr>,
    last_check: Option<Instant>,
    dead: bool,
}

impl IceLiteAgent {
    /// An agent with our credentials and the participant's ufrag from SDP,
    /// created at `now` (consent is counted from here until the first check).
    pub fn new(local_ufrag: &str, local_pwd: &str, remote_ufrag: &str, now: Instant) -> Self {
        Self {
            local_ufrag: local_ufrag.to_owned(),
            local_pwd: local_pwd.to_owned(),
            remote_ufrag: remote_ufrag.to_owned(),
            expected_username: format!("{local_ufrag}:{remote_ufrag}"),
            created: now,
            validated: Vec::new(),
            nominated: None,
            last_check: None,
            dead: false,
        }
    }

    /// Our ufrag.
    pub fn local_ufrag(&self) -> &str {
        &self.local_ufrag
    }

    /// The participant's ufrag.
    pub fn remote_ufrag(&self) -> &str {
        &self.remote_ufrag
    }

    /// The nominated remote address, if any.
    pub fn nominated(&self) -> Option<SocketAddr> {
        self.nominated
    }

    /// Whether `remote` has passed an authenticated check (media from
    /// elsewhere is not from this participant).
    pub fn is_validated(&self, remote: SocketAddr) -> bool {
        self.validated.iter().any(|(a, _)| *a == remote)
    }

    /// Whether consent has lapsed.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Handles one UDP payload from `remote`, received at `now`.
    pub fn handle(&mut self, now: Instant, remote: SocketAddr, packet: &[u8]) -> Handled {
        if self.dead {
            return Handled {
                response: None,
                outcome: Err(Rejection::Dead),
            };
        }
        let Ok(msg) = Message::new_checked(packet) else {
            return drop(Rejection::Malformed);
        };
        if msg.message_type() != BINDING_REQUEST {
            return drop(Rejection::NotARequest);
        }
        let unknown: Vec<u16> = msg.unknown_comprehension_required().collect();
        if !unknown.is_empty() {
            return self.error(
                &msg,
                ERROR_UNKNOWN_ATTRIBUTE,
                &unknown,
                Rejection::UnknownAttribute,
            );
        }
        match msg.verify_fingerprint() {
            Ok(()) => {}
            Err(WireError::Integrity { .. }) => return drop(Rejection::BadFingerprint),
            Err(_) => return self.error(&msg, ERROR_BAD_REQUEST, &[], Rejection::BadRequest),
        }
        let Some(username) = msg.username() else {
            return self.error(&msg, ERROR_BAD_REQUEST, &[], Rejection::BadRequest);
        };
        if msg.message_integrity().is_none() {
            return self.error(&msg, ERROR_BAD_REQUEST, &[], Rejection::BadRequest);
        }
        if username != self.expected_username.as_bytes() {
            return self.error(&msg, ERROR_UNAUTHENTICATED, &[], Rejection::UnknownUser);
        }
        if msg
            .verify_message_integrity(self.local_pwd.as_bytes())
            .is_err()
        {
            return self.error(&msg, ERROR_UNAUTHENTICATED, &[], Rejection::BadIntegrity);
        }
        if msg.ice_controlled().is_some() {
            // RFC 8445 §7.3.1.1: a lite agent is always controlled; a peer
            // that also claims it must switch roles. The answer is
            // authenticated, as the request was.
            let mut out = vec![0u8; MAX_RESPONSE_LEN];
            let len = stun::build_error_response(
                &msg,
                ERROR_ROLE_CONFLICT,
                "",
                &[],
                Some(self.local_pwd.as_bytes()),
                &mut out,
            );
            return Handled {
                response: len.ok().map(|n| {
                    out.truncate(n);
                    out
                }),
                outcome: Err(Rejection::RoleConflict),
            };
        }
        // Authenticated from here on.
        self.last_check = Some(now);
        match self.validated.iter_mut().find(|(a, _)| *a == remote) {
            Some(entry) => entry.1 = now,
            None => {
                if self.validated.len() == MAX_VALIDATED {
                    // Forget the address heard from longest ago, never the
                    // nominated one.
                    let nominated = self.nominated;
                    if let Some(i) = self
                        .validated
                        .iter()
                        .enumerate()
                        .filter(|(_, (a, _))| Some(*a) != nominated)
                        .min_by_key(|(_, (_, t))| *t)
                        .map(|(i, _)| i)
                    {
                        self.validated.swap_remove(i);
                    }
                }
                self.validated.push((remote, now));
            }
        }
        let mut event = None;
        if msg.use_candidate() && self.nominated != Some(remote) {
            self.nominated = Some(remote);
            event = Some(IceEvent::Nominated { remote });
        }
        let mut out = vec![0u8; MAX_RESPONSE_LEN];
        let response =
            stun::build_ice_lite_binding_success(&msg, remote, self.local_pwd.as_bytes(), &mut out)
                .ok()
                .map(|n| {
                    out.truncate(n);
                    out
                });
        Handled {
            response,
            outcome: Ok(event),
        }
    }

    fn error(&self, msg: &Message<&[u8]>, code: u16, unknown: &[u16], why: Rejection) -> Handled {
        debug_assert_eq!(msg.method(), METHOD_BINDING);
        debug_assert_eq!(msg.class(), Class::Request);
        let mut out = vec![0u8; MAX_RESPONSE_LEN];
        // 400/401/420 carry no MESSAGE-INTEGRITY: the request was not
        // authenticated, so there is no key both sides are known to share.
        let response = stun::build_error_response(msg, code, "", unknown, None, &mut out)
            .ok()
            .map(|n| {
                out.truncate(n);
                out
            });
        Handled {
            response,
            outcome: Err(why),
        }
    }

    /// When [`Self::poll`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.dead).then(|| self.last_check.unwrap_or(self.created) + CONSENT_TIMEOUT)
    }

    /// Advances the clock to `now`.
    pub fn poll(&mut self, now: Instant) -> Option<IceEvent> {
        let deadline = self.poll_timeout()?;
        if now >= deadline {
            self.dead = true;
            self.nominated = None;
            Some(IceEvent::ConsentExpired)
        } else {
            None
        }
    }
}

fn drop(why: Rejection) -> Handled {
    Handled {
        response: None,
        outcome: Err(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::wire::stun::{MessageBuilder, BINDING_ERROR_RESPONSE, BINDING_SUCCESS_RESPONSE};

    const LOCAL_UFRAG: &str = "sbUF";
    const LOCAL_PWD: &str = "0123456789abcdefghijklmn";
    const REMOTE_UFRAG: &str = "Jq4E";

    struct Req<'a> {
        username: Option<&'a str>,
        key: Option<&'a str>,
        fingerprint: bool,
        use_candidate: bool,
        controlled: bool,
        extra: Option<u16>,
    }

    impl Default for Req<'_> {
        fn default() -> Self {
            Self {
                username: Some("sbUF:Jq4E"),
                key: Some(LOCAL_PWD),
                fingerprint: true,
                use_candidate: false,
                controlled: false,
                extra: None,
            }
        }
    }

    fn request(r: Req<'_>) -> Vec<u8> {
        let mut out = vec![0u8; 512];
        let mut b = MessageBuilder::new(&mut out, BINDING_REQUEST, [7; 12]).unwrap();
        if let Some(u) = r.username {
            b.add_username(u.as_bytes()).unwrap();
        }
        b.add_priority(0x6e00_1eff).unwrap();
        if r.controlled {
            b.add_ice_controlled(1).unwrap();
        } else {
            b.add_ice_controlling(1).unwrap();
        }
        if r.use_candidate {
            b.add_use_candidate().unwrap();
        }
        if let Some(kind) = r.extra {
            b.add_attribute(kind, &[0; 4]).unwrap();
        }
        if let Some(k) = r.key {
            b.add_message_integrity(k.as_bytes()).unwrap();
        }
        if r.fingerprint {
            b.add_fingerprint().unwrap();
        }
        let n = b.finish();
        out.truncate(n);
        out
    }

    fn agent(now: Instant) -> IceLiteAgent {
        IceLiteAgent::new(LOCAL_UFRAG, LOCAL_PWD, REMOTE_UFRAG, now)
    }

    fn peer() -> SocketAddr {
        "198.18.0.2:50000".parse().unwrap()
    }

    fn error_code(response: &[u8]) -> u16 {
        let m = Message::new_checked(response).unwrap();
        assert_eq!(m.message_type(), BINDING_ERROR_RESPONSE);
        m.verify_fingerprint().unwrap();
        m.error_code().unwrap().code
    }

    #[test]
    fn valid_check_is_answered_and_validates_the_address() {
        let t0 = Instant::now();
        let mut a = agent(t0);
        let h = a.handle(t0, peer(), &request(Req::default()));
        assert_eq!(h.outcome, Ok(None));
        let resp = h.response.unwrap();
        let m = Message::new_checked(resp.as_slice()).unwrap();
        assert_eq!(m.message_type(), BINDING_SUCCESS_RESPONSE);
        assert_eq!(m.transaction_id(), [7; 12]);
        assert_eq!(m.xor_mapped_address(), Some(peer()));
        m.verify_message_integrity(LOCAL_PWD.as_bytes()).unwrap();
        m.verify_fingerprint().unwrap();
        assert!(a.is_validated(peer()));
        assert_eq!(a.nominated(), None);
    }

    #[test]
    fn use_candidate_nominates_once_and_renominates_on_move() {
        let t0 = Instant::now();
        let mut a = agent(t0);
        let req = request(Req {
            use_candidate: true,
            ..Req::default()
        });
        let h = a.handle(t0, peer(), &req);
        assert_eq!(h.outcome, Ok(Some(IceEvent::Nominated { remote: peer() })));
        assert_eq!(a.handle(t0, peer(), &req).outcome, Ok(None));
        let moved: SocketAddr = "198.18.0.3:50001".parse().unwrap();
        assert_eq!(
            a.handle(t0, moved, &req).outcome,
            Ok(Some(IceEvent::Nominated { remote: moved }))
        );
        assert_eq!(a.nominated(), Some(moved));
    }

    #[test]
    fn bad_integrity_never_admits_an_address() {
        let t0 = Instant::now();
        let mut a = agent(t0);
        let req = request(Req {
            key: Some("wrong-password-xxxxxxxxx"),
            use_candidate: true,
            ..Req::default()
        });
        let h = a.handle(t0, peer(), &req);
        assert_eq!(h.outcome, Err(Rejection::BadIntegrity));
        assert_eq!(error_code(&h.response.unwrap()), 401);
        assert!(!a.is_validated(peer()));
        assert_eq!(a.nominated(), None);
        // And it does not refresh consent.
        assert_eq!(a.poll(t0 + CONSENT_TIMEOUT), Some(IceEvent::ConsentExpired));
    }

    #[test]
    fn tampered_packet_is_rejected() {
        let t0 = Instant::now();
        let mut a = agent(t0);
        let mut req = request(Req {
            use_candidate: true,
            ..Req::default()
        });
        // Flip a bit of PRIORITY, covered by both MESSAGE-INTEGRITY and
        // FINGERPRINT: the fingerprint catches it first.
        req[20 + 4 + 12 + 4 + 3] ^= 1;
        let h = a.handle(t0, peer(), &req);
        assert_eq!(h.outcome, Err(Rejection::BadFingerprint));
        assert!(h.response.is_none());
        assert_eq!(a.nominated(), None);
    }

    #[test]
    fn wrong_username_is_401() {
        let t0 = Instant::now();
        let mut a = agent(t0);
        for u in ["sbUF:other", "other:Jq4E", "Jq4E:sbUF"] {
            let h = a.handle(
                t0,
                peer(),
                &request(Req {
                    username: Some(u),
                    ..Req::default()
                }),
            );
            assert_eq!(h.outcome, Err(Rejection::UnknownUser), "{u}");
            assert_eq!(error_code(&h.response.unwrap()), 401);
        }
        assert!(!a.is_validated(peer()));
    }

    #[test]
    fn missing_attributes_are_400() {
        let t0 = Instant::now();
        let mut a = agent(t0);
        for req in [
            Req {
                username: None,
                ..Req::default()
            },
            Req {
                key: None,
                ..Req::default()
            },
            Req {
                fingerprint: false,
                ..Req::default()
            },
        ] {
            let h = a.handle(t0, peer(), &request(req));
            assert_eq!(h.outcome, Err(Rejection::BadRequest));
            let resp = h.response.unwrap();
            assert_eq!(error_code(&resp), 400);
            let m = Message::new_checked(resp.as_slice()).unwrap();
            assert!(m.message_integrity().is_none());
        }
        assert!(!a.is_validated(peer()));
    }

    #[test]
    fn unknown_required_attribute_is_420() {
        let t0 = Instant::now();
        let mut a = agent(t0);
        let h = a.handle(
            t0,
            peer(),
            &request(Req {
                extra: Some(0x0077),
                ..Req::default()
            }),
        );
        assert_eq!(h.outcome, Err(Rejection::UnknownAttribute));
        let resp = h.response.unwrap();
        assert_eq!(error_code(&resp), 420);
        let m = Message::new_checked(resp.as_slice()).unwrap();
        assert_eq!(
            m.unknown_attributes().unwrap().collect::<Vec<_>>(),
            vec![0x0077]
        );
        assert!(!a.is_validated(peer()));
    }

    #[test]
    fn controlled_peer_gets_487_with_integrity() {
        let t0 = Instant::now();
        let mut a = agent(t0);
        let h = a.handle(
            t0,
            peer(),
            &request(Req {
                controlled: true,
                use_candidate: true,
                ..Req::default()
            }),
        );
        assert_eq!(h.outcome, Err(Rejection::RoleConflict));
        let resp = h.response.unwrap();
        assert_eq!(error_code(&resp), 487);
        Message::new_checked(resp.as_slice())
            .unwrap()
            .verify_message_integrity(LOCAL_PWD.as_bytes())
            .unwrap();
        assert_eq!(a.nominated(), None);
    }

    #[test]
    fn non_requests_and_garbage_are_dropped_silently() {
        let t0 = Instant::now();
        let mut a = agent(t0);
        let h = a.handle(t0, peer(), &[0x16, 0xfe, 0xfd, 0, 0]);
        assert_eq!((h.response, h.outcome), (None, Err(Rejection::Malformed)));
        let mut out = vec![0u8; 64];
        let mut b = MessageBuilder::new(&mut out, stun::BINDING_INDICATION, [1; 12]).unwrap();
        b.add_fingerprint().unwrap();
        let n = b.finish();
        let h = a.handle(t0, peer(), &out[..n]);
        assert_eq!((h.response, h.outcome), (None, Err(Rejection::NotARequest)));
    }

    #[test]
    fn consent_expires_30s_after_the_last_valid_check() {
        let t0 = Instant::now();
        let mut a = agent(t0);
        let req = request(Req {
            use_candidate: true,
            ..Req::default()
        });
        a.handle(t0, peer(), &req);
        let t1 = t0 + Duration::from_secs(20);
        a.handle(t1, peer(), &req);
        assert_eq!(a.poll_timeout(), Some(t1 + CONSENT_TIMEOUT));
        assert_eq!(a.poll(t0 + Duration::from_secs(49)), None);
        // A failing check in between does not refresh consent.
        a.handle(
            t0 + Duration::from_secs(45),
            peer(),
            &request(Req {
                key: Some("wrong-password-xxxxxxxxx"),
                ..Req::default()
            }),
        );
        assert_eq!(a.poll(t1 + CONSENT_TIMEOUT), Some(IceEvent::ConsentExpired));
        assert!(a.is_dead());
        assert_eq!(a.nominated(), None);
        assert_eq!(a.poll_timeout(), None);
        assert_eq!(a.handle(t1, peer(), &req).outcome, Err(Rejection::Dead));
    }

    #[test]
    fn a_leg_never_checked_expires_too() {
        let t0 = Instant::now();
        let mut a = agent(t0);
        assert_eq!(a.poll(t0 + Duration::from_secs(29)), None);
        assert_eq!(a.poll(t0 + CONSENT_TIMEOUT), Some(IceEvent::ConsentExpired));
    }

    #[test]
    fn validated_set_is_bounded_and_keeps_the_nominated_pair() {
        let t0 = Instant::now();
        let mut a = agent(t0);
        let nominate = request(Req {
            use_candidate: true,
            ..Req::default()
        });
        a.handle(t0, peer(), &nominate);
        let plain = request(Req::default());
        for i in 0..40u16 {
            let from = SocketAddr::from(([198, 18, 1, 1], 10000 + i));
            a.handle(t0 + Duration::from_millis(u64::from(i) + 1), from, &plain);
        }
        assert_eq!(a.validated.len(), MAX_VALIDATED);
        assert!(a.is_validated(peer()));
        assert_eq!(a.nominated(), Some(peer()));
    }
}
