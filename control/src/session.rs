//! One leg's transport setup, sans-IO: ICE-lite and DTLS on the same UDP
//! 5-tuple, demultiplexed by first byte (RFC 7983), until the leg has a
//! nominated address and SRTP keys.
//!
//! The worker that owns the leg's UDP port feeds every non-RTP datagram of
//! the leg here and sends what comes back; once [`SessionEvent::Ready`]
//! arrives it calls [`crate::media::MediaPlane::activate_leg`]. DTLS from an
//! address that has not passed an authenticated ICE check is dropped, so
//! the handshake (and its CPU) is only spent on the participant.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::dtls::{DtlsError, DtlsEvent, DtlsIdentity, DtlsServer, SrtpKeys};
use crate::ice::{IceEvent, IceLiteAgent, Rejection};
use crate::media::LegTransport;
use crate::sdp::NegotiatedLeg;

/// What the session reports.
#[derive(Debug, Clone)]
pub enum SessionEvent {
    /// ICE nominated an address and DTLS produced keys: the leg can carry
    /// media.
    Ready(LegTransport),
    /// The participant moved to another address (after Ready).
    Moved(SocketAddr),
    /// ICE consent lapsed or DTLS closed: remove the leg.
    Dead,
}

/// A datagram was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// STUN rejected (a response may still have been queued).
    #[error("STUN: {}", .0.as_str())]
    Stun(Rejection),
    /// DTLS from an address that has not passed an ICE check.
    #[error("DTLS from an unvalidated address")]
    Unvalidated,
    /// DTLS failed.
    #[error(transparent)]
    Dtls(#[from] DtlsError),
    /// Neither STUN nor DTLS.
    #[error("not STUN or DTLS")]
    Unknown,
}

/// How often a running DTLS handshake is given the chance to retransmit
/// (OpenSSL's own timer, starting at one second, decides whether it does).
pub const DTLS_TIMER_CHECK: Duration = Duration::from_millis(250);

/// ICE + DTLS of one leg.
#[derive(Debug)]
pub struct LegSession {
    ice: IceLiteAgent,
    dtls: DtlsServer,
    keys: Option<SrtpKeys>,
    ready: bool,
    dead: bool,
    transmit: Vec<(SocketAddr, Vec<u8>)>,
    /// The address the handshake runs with and when to check its timer.
    dtls_timer: Option<(SocketAddr, Instant)>,
}

impl LegSession {
    /// A session for a negotiated leg, created at `now`.
    pub fn new(
        identity: &DtlsIdentity,
        leg: &NegotiatedLeg,
        now: Instant,
    ) -> Result<Self, DtlsError> {
        Ok(Self {
            ice: IceLiteAgent::new(
                &leg.local_ice.ufrag,
                &leg.local_ice.pwd,
                &leg.remote_ice.ufrag,
                now,
            ),
            dtls: identity.server(&leg.remote_fingerprint_sha256)?,
            keys: None,
            ready: false,
            dead: false,
            transmit: Vec::new(),
            dtls_timer: None,
        })
    }

    /// Datagrams to send, with their destination.
    pub fn drain_transmit(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        std::mem::take(&mut self.transmit)
    }

    /// The ICE agent (for the validated-address check on RTP).
    pub fn ice(&self) -> &IceLiteAgent {
        &self.ice
    }

    /// Handles one datagram from `remote` at `now`.
    pub fn handle(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        datagram: &[u8],
    ) -> Result<Option<SessionEvent>, SessionError> {
        if self.dead {
            return Ok(None);
        }
        match datagram.first() {
            // RFC 7983: 0..=3 STUN, 20..=63 DTLS.
            Some(0..=3) => {
                let h = self.ice.handle(now, remote, datagram);
                if let Some(r) = h.response {
                    self.transmit.push((remote, r));
                }
                match h.outcome {
                    Ok(Some(IceEvent::Nominated { remote })) => Ok(self.nominated(remote)),
                    Ok(_) => Ok(None),
                    Err(why) => Err(SessionError::Stun(why)),
                }
            }
            Some(20..=63) => {
                if !self.ice.is_validated(remote) {
                    return Err(SessionError::Unvalidated);
                }
                let event = self.dtls.handle(datagram);
                while let Some(d) = self.dtls.poll_transmit() {
                    self.transmit.push((remote, d));
                }
                self.dtls_timer = self
                    .dtls
                    .is_handshaking()
                    .then_some((remote, now + DTLS_TIMER_CHECK));
                self.dtls_event(event)
            }
            _ => Err(SessionError::Unknown),
        }
    }

    fn dtls_event(
        &mut self,
        event: Result<Option<DtlsEvent>, DtlsError>,
    ) -> Result<Option<SessionEvent>, SessionError> {
        match event? {
            Some(DtlsEvent::KeysReady(keys)) => {
                self.keys = Some(keys);
                Ok(self.try_ready())
            }
            Some(DtlsEvent::Closed) => {
                self.dead = true;
                Ok(Some(SessionEvent::Dead))
            }
            None => Ok(None),
        }
    }

    fn nominated(&mut self, remote: SocketAddr) -> Option<SessionEvent> {
        if self.ready {
            Some(SessionEvent::Moved(remote))
        } else {
            self.try_ready()
        }
    }

    fn try_ready(&mut self) -> Option<SessionEvent> {
        let remote = self.ice.nominated()?;
        let keys = self.keys.clone()?;
        self.ready = true;
        Some(SessionEvent::Ready(LegTransport { remote, keys }))
    }

    /// When [`Self::poll`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ice = self.ice.poll_timeout();
        match (ice, self.dtls_timer) {
            (Some(i), Some((_, d))) => Some(i.min(d)),
            (i, d) => i.or(d.map(|(_, d)| d)),
        }
    }

    /// Advances the clock: DTLS retransmissions (queued for
    /// [`Self::drain_transmit`]) and ICE consent. A handshake that fails
    /// here is reported as `Err`, like one that fails on a datagram.
    pub fn poll(&mut self, now: Instant) -> Result<Option<SessionEvent>, SessionError> {
        if let Some((remote, at)) = self.dtls_timer {
            if now >= at && !self.dead {
                let event = self.dtls.handle_timeout();
                while let Some(d) = self.dtls.poll_transmit() {
                    self.transmit.push((remote, d));
                }
                self.dtls_timer = self
                    .dtls
                    .is_handshaking()
                    .then_some((remote, now + DTLS_TIMER_CHECK));
                if let Some(e) = self.dtls_event(event)? {
                    return Ok(Some(e));
                }
            }
        }
        Ok(self.poll_consent(now))
    }

    fn poll_consent(&mut self, now: Instant) -> Option<SessionEvent> {
        match self.ice.poll(now) {
            Some(IceEvent::ConsentExpired) if !self.dead => {
                self.dead = true;
                Some(SessionEvent::Dead)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtls::{dtls_context, self_signed_certificate, DatagramPipe, MTU};
    use crate::sdp::{IceCredentials, LegDirection};
    use dataplane::wire::stun::{MessageBuilder, BINDING_REQUEST};
    use openssl::hash::MessageDigest;
    use openssl::ssl::{ErrorCode, Ssl, SslStream};

    fn binding(use_candidate: bool) -> Vec<u8> {
        let mut out = vec![0u8; 256];
        let mut b = MessageBuilder::new(&mut out, BINDING_REQUEST, [3; 12]).unwrap();
        b.add_username(b"sbUF:Jq4E").unwrap();
        b.add_ice_controlling(9).unwrap();
        if use_candidate {
            b.add_use_candidate().unwrap();
        }
        b.add_message_integrity(b"0123456789abcdefghijklmn")
            .unwrap();
        b.add_fingerprint().unwrap();
        let n = b.finish();
        out.truncate(n);
        out
    }

    #[test]
    fn ice_then_dtls_makes_the_leg_ready() {
        let identity = DtlsIdentity::generate().unwrap();
        let (cert, key) = self_signed_certificate("browser").unwrap();
        let ctx = dtls_context(&cert, &key, "SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80")
            .unwrap()
            .build();
        let leg = NegotiatedLeg {
            direction: LegDirection::Publish,
            remote_ice: IceCredentials {
                ufrag: "Jq4E".into(),
                pwd: "remote-password-xxxxxxxx".into(),
            },
            local_ice: IceCredentials {
                ufrag: "sbUF".into(),
                pwd: "0123456789abcdefghijklmn".into(),
            },
            remote_fingerprint_sha256: cert.digest(MessageDigest::sha256()).unwrap().to_vec(),
            media: Vec::new(),
        };
        let t0 = Instant::now();
        let mut s = LegSession::new(&identity, &leg, t0).unwrap();
        let peer: SocketAddr = "198.18.0.2:5000".parse().unwrap();
        let stranger: SocketAddr = "198.18.0.9:5000".parse().unwrap();

        let mut ssl = Ssl::new(&ctx).unwrap();
        ssl.set_mtu(MTU).unwrap();
        ssl.set_connect_state();
        let mut client = SslStream::new(ssl, DatagramPipe::default()).unwrap();
        let step = |client: &mut SslStream<DatagramPipe>| match client.connect() {
            Ok(()) => true,
            Err(e) if e.code() == ErrorCode::WANT_READ => false,
            Err(e) => panic!("{e}"),
        };
        step(&mut client);
        let hello = client.get_mut().pop_outgoing().unwrap();
        // DTLS before any ICE check is dropped.
        assert!(matches!(
            s.handle(t0, peer, &hello),
            Err(SessionError::Unvalidated)
        ));
        // A check without USE-CANDIDATE validates the address.
        assert!(s.handle(t0, peer, &binding(false)).unwrap().is_none());
        assert_eq!(s.drain_transmit().len(), 1);
        assert!(matches!(
            s.handle(t0, stranger, &hello),
            Err(SessionError::Unvalidated)
        ));
        let mut ready = None;
        let mut pending = vec![hello];
        for _ in 0..20 {
            for d in pending.drain(..) {
                if let Some(e) = s.handle(t0, peer, &d).unwrap() {
                    ready = Some(e);
                }
            }
            for (to, d) in s.drain_transmit() {
                assert_eq!(to, peer);
                client.get_mut().push_incoming(&d);
            }
            let done = step(&mut client);
            while let Some(d) = client.get_mut().pop_outgoing() {
                pending.push(d);
            }
            if done && pending.is_empty() {
                break;
            }
        }
        // Keys are there but nothing is nominated yet.
        assert!(ready.is_none());
        let e = s.handle(t0, peer, &binding(true)).unwrap();
        match e {
            Some(SessionEvent::Ready(t)) => assert_eq!(t.remote, peer),
            other => panic!("expected Ready, got {other:?}"),
        }
        assert!(s.poll(t0 + crate::ice::CONSENT_TIMEOUT).unwrap().is_some());
    }
}
