//! DTLS 1.2 server with `use_srtp` (RFC 5764), sans-IO over OpenSSL.
//!
//! Datagrams go in through [`DtlsServer::handle`], datagrams to send come out
//! of [`DtlsServer::poll_transmit`], and the handshake's result is a
//! [`DtlsEvent::KeysReady`] with the SRTP master keys of both directions,
//! split from the `EXTRACTOR-dtls_srtp` exporter per RFC 5764 §4.2:
//! `client_key ‖ server_key ‖ client_salt ‖ server_salt`. The appliance is
//! always the DTLS server (`a=setup:passive`), so it protects with the
//! server keys and unprotects with the client keys.
//!
//! Profile preference is the server's: `SRTP_AEAD_AES_128_GCM` first (one
//! pass, and what browsers offer), then `SRTP_AES128_CM_SHA1_80`.
//!
//! The participant's certificate is self-signed, as in all of WebRTC; it is
//! authenticated by comparing its SHA-256 digest with the `a=fingerprint`
//! of the participant's SDP, which arrived over the authenticated HTTP
//! request. A mismatch fails the handshake and no keys are released.
//!
//! Retransmission is left to the client: a DTLS server answers a
//! retransmitted flight by retransmitting its own, and a browser retransmits
//! on its timers, so a lost server flight is recovered without server timers.

use std::collections::VecDeque;
use std::io::{Read, Write};

use dataplane::srtp::{MasterKey, SrtpProfile};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslStream, SslVerifyMode,
    SslVersion,
};
use openssl::x509::{X509NameBuilder, X509};

/// The exporter label of RFC 5764 §4.2.
pub const EXPORTER_LABEL: &str = "EXTRACTOR-dtls_srtp";

/// The `use_srtp` profiles offered, in the server's order of preference.
pub const SRTP_PROFILES: &str = "SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80";

/// Largest DTLS record datagram sent; fits any path's MTU with IPv6, UDP
/// and a TURN relay's overhead.
pub const MTU: u32 = 1200;

/// A DTLS failure.
#[derive(Debug, thiserror::Error)]
pub enum DtlsError {
    /// OpenSSL failed while setting up.
    #[error("DTLS setup: {0}")]
    Setup(#[from] openssl::error::ErrorStack),
    /// The handshake failed.
    #[error("DTLS handshake failed: {0}")]
    Handshake(String),
    /// The peer's certificate does not match the SDP fingerprint.
    #[error("peer certificate does not match the SDP fingerprint")]
    FingerprintMismatch,
    /// No `use_srtp` profile in common.
    #[error("no SRTP protection profile negotiated")]
    NoSrtpProfile,
    /// A profile this appliance does not implement.
    #[error("unsupported SRTP profile: {0}")]
    Profile(String),
}

impl DtlsError {
    /// The name as in metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Setup(_) => "setup",
            Self::Handshake(_) => "handshake",
            Self::FingerprintMismatch => "fingerprint_mismatch",
            Self::NoSrtpProfile => "no_srtp_profile",
            Self::Profile(_) => "profile",
        }
    }
}

/// This appliance's DTLS certificate and key, generated at start. Cloning
/// shares the same OpenSSL context.
#[derive(Clone)]
pub struct DtlsIdentity {
    context: SslContext,
    fingerprint: Vec<u8>,
}

impl std::fmt::Debug for DtlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsIdentity")
            .field(
                "fingerprint",
                &crate::sdp::format_fingerprint(&self.fingerprint),
            )
            .finish()
    }
}

/// Generates a self-signed ECDSA P-256 certificate (SHA-256 signature),
/// valid from yesterday (clock skew) for a year.
pub fn self_signed_certificate(common_name: &str) -> Result<(X509, PKey<Private>), DtlsError> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, common_name)?;
    let name = name.build();
    let mut serial = BigNum::new()?;
    serial.rand(63, MsbOption::MAYBE_ZERO, false)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let serial: openssl::asn1::Asn1Integer = serial.to_asn1_integer()?;
    let not_before: Asn1Time = Asn1Time::from_unix(now - 86_400)?;
    let not_after: Asn1Time = Asn1Time::from_unix(now + 365 * 86_400)?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(&key)?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    b.sign(&key, MessageDigest::sha256())?;
    Ok((b.build(), key))
}

/// A DTLS context with `use_srtp`, a certificate, DTLS 1.2 only, and peer
/// certificates required but checked by fingerprint rather than by chain.
pub fn dtls_context(
    cert: &X509,
    key: &PKey<Private>,
    srtp_profiles: &str,
) -> Result<SslContextBuilder, DtlsError> {
    let mut ctx = SslContext::builder(SslMethod::dtls())?;
    ctx.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    ctx.set_max_proto_version(Some(SslVersion::DTLS1_2))?;
    ctx.set_certificate(cert)?;
    ctx.set_private_key(key)?;
    ctx.check_private_key()?;
    ctx.set_tlsext_use_srtp(srtp_profiles)?;
    ctx.set_options(SslOptions::NO_QUERY_MTU);
    ctx.set_verify_callback(
        SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        // Self-signed by design: the SDP fingerprint authenticates it.
        |_, _| true,
    );
    Ok(ctx)
}

impl DtlsIdentity {
    /// A fresh certificate and the server context around it.
    pub fn generate() -> Result<Self, DtlsError> {
        let (cert, key) = self_signed_certificate("switchboard")?;
        let fingerprint = cert.digest(MessageDigest::sha256())?.to_vec();
        let context = dtls_context(&cert, &key, SRTP_PROFILES)?.build();
        Ok(Self {
            context,
            fingerprint,
        })
    }

    /// SHA-256 digest of the certificate.
    pub fn fingerprint(&self) -> &[u8] {
        &self.fingerprint
    }

    /// The digest as SDP writes it.
    pub fn fingerprint_sdp(&self) -> String {
        crate::sdp::format_fingerprint(&self.fingerprint)
    }

    /// A server endpoint for one leg whose peer must present a certificate
    /// with SHA-256 digest `remote_fingerprint`.
    pub fn server(&self, remote_fingerprint: &[u8]) -> Result<DtlsServer, DtlsError> {
        let mut ssl = Ssl::new(&self.context)?;
        ssl.set_mtu(MTU)?;
        let stream = SslStream::new(ssl, DatagramPipe::default())?;
        Ok(DtlsServer {
            stream,
            remote_fingerprint: remote_fingerprint.to_vec(),
            state: State::Handshaking,
        })
    }
}

/// In-memory datagram transport under OpenSSL: each `read` yields one queued
/// datagram, each `write` is one datagram out.
#[derive(Debug, Default)]
pub struct DatagramPipe {
    incoming: VecDeque<Vec<u8>>,
    outgoing: VecDeque<Vec<u8>>,
}

impl DatagramPipe {
    /// Queues a received datagram.
    pub fn push_incoming(&mut self, datagram: &[u8]) {
        self.incoming.push_back(datagram.to_vec());
    }

    /// Takes the next datagram to send.
    pub fn pop_outgoing(&mut self) -> Option<Vec<u8>> {
        self.outgoing.pop_front()
    }
}

impl Read for DatagramPipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.incoming.pop_front() {
            Some(d) => {
                // A datagram longer than the buffer is truncated, as a UDP
                // socket would; DTLS then discards the broken record.
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                Ok(n)
            }
            None => Err(std::io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for DatagramPipe {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.outgoing.push_back(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// SRTP master keys of both directions of a leg.
#[derive(Clone)]
pub struct SrtpKeys {
    /// The negotiated profile.
    pub profile: SrtpProfile,
    /// Protects what the appliance sends (the DTLS server's write key).
    pub local: MasterKey,
    /// Unprotects what the participant sends (the client's write key).
    pub remote: MasterKey,
}

impl std::fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpKeys")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

/// Splits exported keying material into `(client, server)` master keys
/// (RFC 5764 §4.2).
pub fn split_keying_material(
    profile: SrtpProfile,
    material: &[u8],
) -> Result<(MasterKey, MasterKey), DtlsError> {
    let k = profile.master_key_len();
    let s = profile.master_salt_len();
    if material.len() != 2 * (k + s) {
        return Err(DtlsError::Profile(format!(
            "{} bytes of keying material for {}",
            material.len(),
            profile.name()
        )));
    }
    let (client_key, rest) = material.split_at(k);
    let (server_key, rest) = rest.split_at(k);
    let (client_salt, server_salt) = rest.split_at(s);
    let bad = |e: dataplane::srtp::SrtpError| DtlsError::Profile(e.to_string());
    Ok((
        MasterKey::new(client_key, client_salt).map_err(bad)?,
        MasterKey::new(server_key, server_salt).map_err(bad)?,
    ))
}

/// What the endpoint reports.
#[derive(Debug, Clone)]
pub enum DtlsEvent {
    /// Handshake done, peer authenticated: the leg's SRTP keys.
    KeysReady(SrtpKeys),
    /// The peer closed the association (close_notify).
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshaking,
    Connected,
    Closed,
    Failed,
}

/// The DTLS server endpoint of one leg.
pub struct DtlsServer {
    stream: SslStream<DatagramPipe>,
    remote_fingerprint: Vec<u8>,
    state: State,
}

impl std::fmt::Debug for DtlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsServer")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl DtlsServer {
    /// Whether the handshake has completed.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Feeds one received DTLS datagram.
    pub fn handle(&mut self, datagram: &[u8]) -> Result<Option<DtlsEvent>, DtlsError> {
        match self.state {
            State::Closed | State::Failed => return Ok(None),
            State::Handshaking | State::Connected => {}
        }
        self.stream.get_mut().push_incoming(datagram);
        self.drive()
    }

    /// Whether the handshake is still running.
    pub fn is_handshaking(&self) -> bool {
        self.state == State::Handshaking
    }

    /// Lets OpenSSL retransmit its last handshake flight if its timer
    /// expired (it checks the timer whenever it is asked to read; the
    /// datagrams come out of [`Self::poll_transmit`]). Without this a lost
    /// final server flight would wait for the client to retransmit.
    pub fn handle_timeout(&mut self) -> Result<Option<DtlsEvent>, DtlsError> {
        if self.state != State::Handshaking {
            return Ok(None);
        }
        self.drive()
    }

    fn drive(&mut self) -> Result<Option<DtlsEvent>, DtlsError> {
        if self.state == State::Handshaking {
            return match self.stream.accept() {
                Ok(()) => match self.finish_handshake() {
                    Ok(keys) => {
                        self.state = State::Connected;
                        Ok(Some(DtlsEvent::KeysReady(keys)))
                    }
                    Err(e) => {
                        self.state = State::Failed;
                        Err(e)
                    }
                },
                Err(e) if e.code() == ErrorCode::WANT_READ => Ok(None),
                Err(e) => {
                    self.state = State::Failed;
                    Err(DtlsError::Handshake(e.to_string()))
                }
            };
        }
        // Connected: the only records expected are alerts (and retransmitted
        // handshake flights, which OpenSSL answers itself); application data
        // would be a data channel, which is not negotiated, so it is dropped.
        let mut buf = [0u8; 2048];
        loop {
            match self.stream.ssl_read(&mut buf) {
                Ok(_) => continue,
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                    self.state = State::Closed;
                    return Ok(Some(DtlsEvent::Closed));
                }
                Err(e) if e.code() == ErrorCode::WANT_READ => return Ok(None),
                Err(e) => {
                    self.state = State::Failed;
                    return Err(DtlsError::Handshake(e.to_string()));
                }
            }
        }
    }

    /// The next datagram to send to the peer.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.stream.get_mut().pop_outgoing()
    }

    fn finish_handshake(&mut self) -> Result<SrtpKeys, DtlsError> {
        let ssl = self.stream.ssl();
        let peer = ssl
            .peer_certificate()
            .ok_or(DtlsError::FingerprintMismatch)?;
        let digest = peer.digest(MessageDigest::sha256())?;
        if digest.as_ref() != self.remote_fingerprint.as_slice() {
            return Err(DtlsError::FingerprintMismatch);
        }
        let id = ssl
            .selected_srtp_profile()
            .ok_or(DtlsError::NoSrtpProfile)?
            .id()
            .as_raw();
        let profile = u16::try_from(id)
            .ok()
            .and_then(|id| SrtpProfile::from_dtls_id(id).ok())
            .ok_or_else(|| DtlsError::Profile(format!("id {id}")))?;
        let mut material = vec![0u8; 2 * (profile.master_key_len() + profile.master_salt_len())];
        ssl.export_keying_material(&mut material, EXPORTER_LABEL, None)?;
        let (client, server) = split_keying_material(profile, &material)?;
        Ok(SrtpKeys {
            profile,
            local: server,
            remote: client,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An OpenSSL DTLS client, driven the same way (an independent
    /// handshake implementation's state machine: OpenSSL's client side).
    struct Client {
        stream: SslStream<DatagramPipe>,
        fingerprint: Vec<u8>,
    }

    impl Client {
        fn new(profiles: &str) -> Self {
            let (cert, key) = self_signed_certificate("participant").unwrap();
            let fingerprint = cert.digest(MessageDigest::sha256()).unwrap().to_vec();
            let ctx = dtls_context(&cert, &key, profiles).unwrap().build();
            let mut ssl = Ssl::new(&ctx).unwrap();
            ssl.set_mtu(MTU).unwrap();
            ssl.set_connect_state();
            let stream = SslStream::new(ssl, DatagramPipe::default()).unwrap();
            Self {
                stream,
                fingerprint,
            }
        }

        fn drive(&mut self) -> bool {
            match self.stream.connect() {
                Ok(()) => true,
                Err(e) if e.code() == ErrorCode::WANT_READ => false,
                Err(e) => panic!("client: {e}"),
            }
        }
    }

    /// Runs a handshake in memory; returns the server's keys and the
    /// client's exported material and profile id.
    fn handshake(
        client_profiles: &str,
        tamper_fingerprint: bool,
    ) -> (Result<SrtpKeys, DtlsError>, Client, usize) {
        let identity = DtlsIdentity::generate().unwrap();
        let mut client = Client::new(client_profiles);
        let mut expected = client.fingerprint.clone();
        if tamper_fingerprint {
            expected[0] ^= 1;
        }
        let mut server = identity.server(&expected).unwrap();
        let mut keys = None;
        let mut datagrams = 0;
        for _round in 0..20 {
            client.drive();
            while let Some(d) = client.stream.get_mut().pop_outgoing() {
                assert!(d.len() <= MTU as usize);
                datagrams += 1;
                match server.handle(&d) {
                    Ok(Some(DtlsEvent::KeysReady(k))) => keys = Some(Ok(k)),
                    Ok(_) => {}
                    Err(e) => return (Err(e), client, datagrams),
                }
            }
            while let Some(d) = server.poll_transmit() {
                assert!(d.len() <= MTU as usize);
                datagrams += 1;
                client.stream.get_mut().push_incoming(&d);
            }
            if keys.is_some() && client.drive() {
                break;
            }
        }
        // The client checks the server's fingerprint the same way.
        let server_cert = client.stream.ssl().peer_certificate().unwrap();
        assert_eq!(
            server_cert
                .digest(MessageDigest::sha256())
                .unwrap()
                .as_ref(),
            identity.fingerprint()
        );
        (keys.expect("handshake completed"), client, datagrams)
    }

    fn client_material(client: &Client, profile: SrtpProfile) -> (MasterKey, MasterKey) {
        let mut m = vec![0u8; 2 * (profile.master_key_len() + profile.master_salt_len())];
        client
            .stream
            .ssl()
            .export_keying_material(&mut m, EXPORTER_LABEL, None)
            .unwrap();
        split_keying_material(profile, &m).unwrap()
    }

    #[test]
    fn handshake_prefers_gcm_and_both_sides_agree_on_keys() {
        // The client lists CM first; the server's preference picks GCM.
        let (keys, client, _) = handshake("SRTP_AES128_CM_SHA1_80:SRTP_AEAD_AES_128_GCM", false);
        let keys = keys.unwrap();
        assert_eq!(keys.profile, SrtpProfile::AeadAes128Gcm);
        let client_id = client
            .stream
            .ssl()
            .selected_srtp_profile()
            .unwrap()
            .id()
            .as_raw();
        assert_eq!(client_id, 0x0007);
        let (c_client, c_server) = client_material(&client, keys.profile);
        // The server's remote key is what the client writes with, and the
        // server's local key is what the client reads with.
        assert_eq!(keys.remote.key(), c_client.key());
        assert_eq!(keys.remote.salt(), c_client.salt());
        assert_eq!(keys.local.key(), c_server.key());
        assert_eq!(keys.local.salt(), c_server.salt());
        assert_ne!(keys.local.key(), keys.remote.key());
        assert_eq!((keys.local.key().len(), keys.local.salt().len()), (16, 12));
    }

    #[test]
    fn falls_back_to_aes_cm_hmac_sha1_80() {
        let (keys, client, _) = handshake("SRTP_AES128_CM_SHA1_80", false);
        let keys = keys.unwrap();
        assert_eq!(keys.profile, SrtpProfile::AesCm128HmacSha1_80);
        assert_eq!((keys.local.key().len(), keys.local.salt().len()), (16, 14));
        let (c_client, _) = client_material(&client, keys.profile);
        assert_eq!(keys.remote.key(), c_client.key());
    }

    #[test]
    fn keys_drive_dataplane_srtp_between_the_two_sides() {
        use dataplane::srtp::SrtpContext;
        let (keys, client, _) = handshake("SRTP_AEAD_AES_128_GCM", false);
        let keys = keys.unwrap();
        let (c_client, _) = client_material(&client, keys.profile);
        let mut sender = SrtpContext::new(keys.profile, &c_client).unwrap();
        let mut receiver = SrtpContext::new(keys.profile, &keys.remote).unwrap();
        let mut pkt = vec![0u8; 12 + 20 + keys.profile.rtp_overhead()];
        pkt[0] = 0x80;
        pkt[1] = 96;
        pkt[3] = 1;
        pkt[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        pkt[12..32].copy_from_slice(&[0x5a; 20]);
        let n = sender.protect_rtp(&mut pkt, 32).unwrap();
        pkt.truncate(n);
        let m = receiver.unprotect_rtp(&mut pkt).unwrap();
        assert_eq!(&pkt[12..m], &[0x5a; 20]);
    }

    #[test]
    fn wrong_fingerprint_releases_no_keys() {
        let (keys, _, _) = handshake("SRTP_AEAD_AES_128_GCM", true);
        assert!(matches!(keys, Err(DtlsError::FingerprintMismatch)));
    }

    #[test]
    fn garbage_fails_the_handshake() {
        let identity = DtlsIdentity::generate().unwrap();
        let mut server = identity.server(&[0; 32]).unwrap();
        // A DTLS 1.2 record header claiming a handshake, with junk inside.
        let mut junk = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16];
        junk.extend_from_slice(&[0xff; 16]);
        let r = server.handle(&junk);
        // OpenSSL either rejects it or discards it silently; either way no
        // keys and nothing is connected.
        assert!(!matches!(r, Ok(Some(DtlsEvent::KeysReady(_)))));
        assert!(!server.is_connected());
    }

    #[test]
    fn close_notify_is_reported() {
        let identity = DtlsIdentity::generate().unwrap();
        let mut client = Client::new("SRTP_AEAD_AES_128_GCM");
        let mut server = identity.server(&client.fingerprint).unwrap();
        for _ in 0..20 {
            let done = client.drive();
            while let Some(d) = client.stream.get_mut().pop_outgoing() {
                server.handle(&d).unwrap();
            }
            while let Some(d) = server.poll_transmit() {
                client.stream.get_mut().push_incoming(&d);
            }
            if done && server.is_connected() {
                break;
            }
        }
        assert!(server.is_connected());
        let _ = client.stream.shutdown();
        let mut closed = false;
        while let Some(d) = client.stream.get_mut().pop_outgoing() {
            if let Ok(Some(DtlsEvent::Closed)) = server.handle(&d) {
                closed = true;
            }
        }
        assert!(closed);
    }

    #[test]
    fn identity_fingerprint_is_sha256_of_a_p256_cert() {
        let (cert, _) = self_signed_certificate("x").unwrap();
        let pk = cert.public_key().unwrap();
        assert_eq!(
            pk.ec_key().unwrap().group().curve_name(),
            Some(Nid::X9_62_PRIME256V1)
        );
        let id = DtlsIdentity::generate().unwrap();
        assert_eq!(id.fingerprint().len(), 32);
        assert_eq!(id.fingerprint_sdp().len(), 32 * 3 - 1);
    }

    #[test]
    fn split_rejects_wrong_length() {
        assert!(split_keying_material(SrtpProfile::AeadAes128Gcm, &[0; 10]).is_err());
        let (c, s) = split_keying_material(
            SrtpProfile::AesCm128HmacSha1_80,
            &(0..60).collect::<Vec<u8>>(),
        )
        .unwrap();
        assert_eq!(c.key(), &(0..16).collect::<Vec<u8>>()[..]);
        assert_eq!(s.key(), &(16..32).collect::<Vec<u8>>()[..]);
        assert_eq!(c.salt(), &(32..46).collect::<Vec<u8>>()[..]);
        assert_eq!(s.salt(), &(46..60).collect::<Vec<u8>>()[..]);
    }
}
