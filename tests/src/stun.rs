//! A small STUN/TURN client for testing coturn: Binding, Allocate,
//! CreatePermission and Refresh requests (RFC 8489, 8656, 6156), the
//! long-term credential flow with TURN REST credentials, MESSAGE-INTEGRITY
//! and FINGERPRINT, over UDP or over a byte stream (TCP, TLS).
//!
//! The message codec is webrtc-rs's `stun` crate; this file only puts the
//! TURN requests together and runs the challenge/response.
//!
//! The coturn tests name public peers in CreatePermission, which sends
//! nothing to the peer. The one request that makes the server send to a
//! peer, a Send indication, refuses any peer that is not loopback, and there
//! is no ChannelData: nothing here can make the server send a packet off
//! the machine.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use stun::attributes::{
    ATTR_DATA, ATTR_LIFETIME, ATTR_NONCE, ATTR_REALM, ATTR_REQUESTED_ADDRESS_FAMILY,
    ATTR_REQUESTED_TRANSPORT, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS, ATTR_XOR_RELAYED_ADDRESS,
    ATTR_XORMAPPED_ADDRESS, AttrType,
};
use stun::error_code::ErrorCodeAttribute;
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, Getter,
    METHOD_ALLOCATE, METHOD_BINDING, METHOD_CREATE_PERMISSION, METHOD_REFRESH, METHOD_SEND,
    Message, MessageType, Method, Setter,
};
use stun::textattrs::TextAttribute;
use stun::xoraddr::XorMappedAddress;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;

/// STUN error codes the tests look for.
pub const UNAUTHORIZED: u16 = 401;
pub const FORBIDDEN: u16 = 403;
pub const STALE_NONCE: u16 = 438;
pub const PEER_FAMILY_MISMATCH: u16 = 443;
pub const QUOTA_REACHED: u16 = 486;

/// How long one UDP attempt waits for its answer, and how many attempts.
const UDP_WAIT: Duration = Duration::from_millis(1500);
const UDP_TRIES: usize = 3;
/// How long a stream transaction waits in all.
const STREAM_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StunError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("STUN codec: {0}")]
    Codec(#[from] stun::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("bad answer: {0}")]
    BadAnswer(String),
}

/// The TURN REST password for `username`: base64(HMAC-SHA1(secret,
/// username)), what coturn's `use-auth-secret` checks.
pub fn rest_password(secret: &str, username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// TURN REST credentials for `name` valid for `ttl` from now: the username
/// `<unix expiry>:<name>` and its password.
pub fn rest_credentials(secret: &str, name: &str, ttl: Duration) -> (String, String) {
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        + ttl;
    let username = format!("{}:{name}", expiry.as_secs());
    let password = rest_password(secret, &username);
    (username, password)
}

/// The address family of a relayed address (REQUESTED-ADDRESS-FAMILY).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }
}

/// A request this client can make.
#[derive(Clone, Debug)]
pub enum Request {
    Binding,
    /// A UDP relay of this family.
    Allocate(Family),
    /// One peer address (the port is ignored by TURN permissions).
    CreatePermission(IpAddr),
    /// Refresh with this lifetime in seconds; 0 deletes the allocation.
    Refresh(u32),
}

impl Request {
    fn method(&self) -> Method {
        match self {
            Request::Binding => METHOD_BINDING,
            Request::Allocate(_) => METHOD_ALLOCATE,
            Request::CreatePermission(_) => METHOD_CREATE_PERMISSION,
            Request::Refresh(_) => METHOD_REFRESH,
        }
    }
}

/// What the long-term credential mechanism signs a request with: the
/// server's realm and nonce from its 401 challenge.
#[derive(Clone, Debug)]
pub struct LongTermAuth {
    pub username: String,
    pub password: String,
    pub realm: String,
    pub nonce: String,
}

impl LongTermAuth {
    /// The HMAC key: MD5(username:realm:password).
    fn integrity(&self) -> MessageIntegrity {
        MessageIntegrity::new_long_term_integrity(
            self.username.clone(),
            self.realm.clone(),
            self.password.clone(),
        )
    }
}

/// A request's bytes (with FINGERPRINT, and MESSAGE-INTEGRITY when `auth`
/// is given) and its transaction id.
pub fn encode(req: &Request, auth: Option<&LongTermAuth>) -> Result<Message, StunError> {
    let mut m = Message::new();
    m.build(&[
        Box::new(MessageType::new(req.method(), CLASS_REQUEST)),
        Box::new(stun::agent::TransactionId::new()),
    ])?;
    match req {
        Request::Binding => {}
        Request::Allocate(family) => {
            // REQUESTED-TRANSPORT: UDP (17), then three reserved bytes.
            m.add(ATTR_REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
            // RFC 6156: 0x01 IPv4, 0x02 IPv6. Sent for IPv6 only, as
            // browsers do (IPv4 is the default).
            if *family == Family::V6 {
                m.add(ATTR_REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0]);
            }
        }
        Request::CreatePermission(ip) => {
            XorMappedAddress { ip: *ip, port: 0 }.add_to_as(&mut m, ATTR_XOR_PEER_ADDRESS)?;
        }
        Request::Refresh(lifetime) => m.add(ATTR_LIFETIME, &lifetime.to_be_bytes()),
    }
    if let Some(a) = auth {
        TextAttribute::new(ATTR_USERNAME, a.username.clone()).add_to(&mut m)?;
        TextAttribute::new(ATTR_REALM, a.realm.clone()).add_to(&mut m)?;
        TextAttribute::new(ATTR_NONCE, a.nonce.clone()).add_to(&mut m)?;
        a.integrity().add_to(&mut m)?;
    }
    FINGERPRINT.add_to(&mut m)?;
    Ok(m)
}

/// A parsed answer.
#[derive(Clone, Debug)]
pub struct Response {
    pub method: Method,
    pub success: bool,
    /// ERROR-CODE of an error response: (code, reason).
    pub error: Option<(u16, String)>,
    pub realm: Option<String>,
    pub nonce: Option<String>,
    pub relayed: Option<SocketAddr>,
    pub mapped: Option<SocketAddr>,
    /// Whether its MESSAGE-INTEGRITY checked out with our key (None: it had
    /// none, or we had no key).
    pub integrity_ok: Option<bool>,
}

impl Response {
    /// The error code, None for a success.
    pub fn code(&self) -> Option<u16> {
        self.error.as_ref().map(|(c, _)| *c)
    }
}

impl std::fmt::Display for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.error {
            None => write!(f, "{} success", self.method),
            Some((c, r)) => write!(f, "{} error {c} {r}", self.method),
        }
    }
}

/// Parses an answer to `req` (same transaction id, method and a response
/// class), checking its FINGERPRINT if it has one and its integrity with
/// `auth`'s key.
pub fn decode(
    bytes: &[u8],
    req: &Message,
    auth: Option<&LongTermAuth>,
) -> Result<Response, StunError> {
    let mut m = Message::new();
    m.unmarshal_binary(bytes)?;
    if m.transaction_id != req.transaction_id {
        return Err(StunError::BadAnswer("another transaction id".into()));
    }
    if m.typ.method != req.typ.method {
        return Err(StunError::BadAnswer(format!(
            "method {} for {}",
            m.typ.method, req.typ.method
        )));
    }
    let success = if m.typ.class == CLASS_SUCCESS_RESPONSE {
        true
    } else if m.typ.class == CLASS_ERROR_RESPONSE {
        false
    } else {
        return Err(StunError::BadAnswer(format!("class {}", m.typ.class)));
    };
    if m.contains(stun::attributes::ATTR_FINGERPRINT) {
        FINGERPRINT.check(&m)?;
    }
    let error = if success {
        None
    } else {
        let mut e = ErrorCodeAttribute::default();
        e.get_from(&m)?;
        Some((e.code.0, String::from_utf8_lossy(&e.reason).into_owned()))
    };
    let text = |t: AttrType| TextAttribute::get_from_as(&m, t).ok().map(|a| a.text);
    let addr = |t: AttrType| {
        let mut a = XorMappedAddress::default();
        a.get_from_as(&m, t)
            .ok()
            .map(|()| SocketAddr::new(a.ip, a.port))
    };
    let (realm, nonce) = (text(ATTR_REALM), text(ATTR_NONCE));
    let (relayed, mapped) = (addr(ATTR_XOR_RELAYED_ADDRESS), addr(ATTR_XORMAPPED_ADDRESS));
    let integrity_ok = match auth {
        Some(a) if m.contains(stun::attributes::ATTR_MESSAGE_INTEGRITY) => {
            Some(a.integrity().check(&mut m).is_ok())
        }
        _ => None,
    };
    Ok(Response {
        method: m.typ.method,
        success,
        error,
        realm,
        nonce,
        relayed,
        mapped,
        integrity_ok,
    })
}

/// A byte stream a STUN client can run over (TCP, TLS).
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

enum Transport {
    /// Connected to the server, so only its datagrams arrive.
    Udp(UdpSocket),
    Stream(Pin<Box<dyn Stream>>),
}

/// One TURN client: one transport address, so at most one allocation.
pub struct TurnClient {
    transport: Transport,
    username: String,
    password: String,
    /// The realm and nonce of the server's last challenge.
    challenge: Option<(String, String)>,
    /// The relayed address of our allocation, once made.
    pub relayed: Option<SocketAddr>,
}

impl TurnClient {
    /// A client on a new loopback UDP socket of `server`'s family.
    pub async fn udp(
        server: SocketAddr,
        username: &str,
        password: &str,
    ) -> Result<TurnClient, StunError> {
        let local: IpAddr = match server {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        };
        assert!(
            server.ip().is_loopback(),
            "the test STUN client talks to loopback servers only, not {server}"
        );
        let sock = UdpSocket::bind(SocketAddr::new(local, 0)).await?;
        sock.connect(server).await?;
        Ok(TurnClient::new(Transport::Udp(sock), username, password))
    }

    /// A client over an established stream (e.g. TLS to coturn's
    /// `tls-listening-port`), STUN messages framed by their own length.
    pub fn over_stream(
        stream: impl Stream + 'static,
        username: &str,
        password: &str,
    ) -> TurnClient {
        TurnClient::new(Transport::Stream(Box::pin(stream)), username, password)
    }

    fn new(transport: Transport, username: &str, password: &str) -> TurnClient {
        TurnClient {
            transport,
            username: username.to_string(),
            password: password.to_string(),
            challenge: None,
            relayed: None,
        }
    }

    fn auth(&self) -> Option<LongTermAuth> {
        self.challenge.as_ref().map(|(realm, nonce)| LongTermAuth {
            username: self.username.clone(),
            password: self.password.clone(),
            realm: realm.clone(),
            nonce: nonce.clone(),
        })
    }

    /// Sends `req` unauthenticated (Binding) or with the long-term
    /// credentials, answering a 401 challenge or a 438 stale nonce once.
    pub async fn request(&mut self, req: Request) -> Result<Response, StunError> {
        if matches!(req, Request::Binding) {
            let m = encode(&req, None)?;
            return self.transact(&m, None).await;
        }
        let mut retried = false;
        loop {
            let auth = self.auth();
            let m = encode(&req, auth.as_ref())?;
            let r = self.transact(&m, auth.as_ref()).await?;
            match r.code() {
                Some(UNAUTHORIZED | STALE_NONCE) if !retried => {
                    let (Some(realm), Some(nonce)) = (r.realm.clone(), r.nonce.clone()) else {
                        return Ok(r);
                    };
                    // A 401 to a request that already had credentials means
                    // they are wrong: answer it, do not loop.
                    if r.code() == Some(UNAUTHORIZED) && auth.is_some() {
                        return Ok(r);
                    }
                    self.challenge = Some((realm, nonce));
                    retried = true;
                }
                _ => {
                    if r.success && auth.is_some() && r.integrity_ok != Some(true) {
                        return Err(StunError::BadAnswer(format!(
                            "{r} without a valid MESSAGE-INTEGRITY"
                        )));
                    }
                    return Ok(r);
                }
            }
        }
    }

    /// Allocates a UDP relay of `family`; its address is kept in `relayed`.
    pub async fn allocate(&mut self, family: Family) -> Result<Response, StunError> {
        let r = self.request(Request::Allocate(family)).await?;
        if r.success {
            self.relayed = r.relayed;
        }
        Ok(r)
    }

    pub async fn create_permission(&mut self, peer: IpAddr) -> Result<Response, StunError> {
        self.request(Request::CreatePermission(peer)).await
    }

    /// Deletes the allocation (Refresh with lifetime 0).
    pub async fn release(&mut self) -> Result<Response, StunError> {
        let r = self.request(Request::Refresh(0)).await?;
        if r.success {
            self.relayed = None;
        }
        Ok(r)
    }

    pub async fn binding(&mut self) -> Result<Response, StunError> {
        self.request(Request::Binding).await
    }

    /// Relays `data` to `peer` through our allocation (a Send indication,
    /// which has no answer). Loopback peers only: this is what makes coturn
    /// send a packet, and tests never send one off the machine.
    pub async fn send_to_loopback(
        &mut self,
        peer: SocketAddr,
        data: &[u8],
    ) -> Result<(), StunError> {
        assert!(
            peer.ip().is_loopback(),
            "Send indications go to loopback peers only, not {peer}"
        );
        let mut m = Message::new();
        m.build(&[
            Box::new(MessageType::new(METHOD_SEND, CLASS_INDICATION)),
            Box::new(stun::agent::TransactionId::new()),
        ])?;
        XorMappedAddress {
            ip: peer.ip(),
            port: peer.port(),
        }
        .add_to_as(&mut m, ATTR_XOR_PEER_ADDRESS)?;
        m.add(ATTR_DATA, data);
        FINGERPRINT.add_to(&mut m)?;
        match &mut self.transport {
            Transport::Udp(sock) => {
                sock.send(&m.raw).await?;
            }
            Transport::Stream(st) => st.write_all(&m.raw).await?,
        }
        Ok(())
    }

    async fn transact(
        &mut self,
        m: &Message,
        auth: Option<&LongTermAuth>,
    ) -> Result<Response, StunError> {
        match &mut self.transport {
            Transport::Udp(sock) => {
                let mut buf = vec![0u8; 2048];
                // UDP: retransmit the same bytes, keep what is not ours.
                for _ in 0..UDP_TRIES {
                    sock.send(&m.raw).await?;
                    let deadline = tokio::time::Instant::now() + UDP_WAIT;
                    while let Ok(n) = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                        match decode(&buf[..n?], m, auth) {
                            Ok(r) => return Ok(r),
                            Err(StunError::BadAnswer(_)) => continue,
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(StunError::Timeout(UDP_WAIT * UDP_TRIES as u32))
            }
            Transport::Stream(s) => {
                let answer = async {
                    s.write_all(&m.raw).await?;
                    s.flush().await?;
                    loop {
                        let bytes = read_message(s).await?;
                        match decode(&bytes, m, auth) {
                            Ok(r) => return Ok(r),
                            Err(StunError::BadAnswer(_)) => continue,
                            Err(e) => return Err(e),
                        }
                    }
                };
                tokio::time::timeout(STREAM_WAIT, answer)
                    .await
                    .map_err(|_| StunError::Timeout(STREAM_WAIT))?
            }
        }
    }
}

/// One STUN message from a stream: the 20-byte header, then as many bytes
/// as its length field says (RFC 8489 section 6.2.2, no ChannelData here).
async fn read_message<S: AsyncRead + Unpin + ?Sized>(s: &mut S) -> Result<Vec<u8>, StunError> {
    let mut msg = vec![0u8; 20];
    s.read_exact(&mut msg).await?;
    if msg[0] & 0xc0 != 0 {
        return Err(StunError::BadAnswer(
            "not a STUN message on the stream".into(),
        ));
    }
    let len = usize::from(u16::from_be_bytes([msg[2], msg[3]]));
    msg.resize(20 + len, 0);
    s.read_exact(&mut msg[20..]).await?;
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_password_known_answer() {
        // printf '1700000000:alice' | openssl dgst -sha1 -hmac secret -binary | base64
        assert_eq!(
            rest_password("secret", "1700000000:alice"),
            "d8soP47RbdIKLDUOpnJPVQyq5Ts="
        );
        // The same as what the signaling server hands out.
        assert_eq!(
            rest_password("secret", "1700000000:alice"),
            signaling::ice::turn_password("secret", "1700000000:alice")
        );
    }

    #[test]
    fn create_permission_round_trips_peer_address() {
        for ip in ["8.8.8.8", "2001:4860:4860::8888", "::ffff:127.0.0.1"] {
            let ip: IpAddr = ip.parse().expect("ip");
            let m = encode(&Request::CreatePermission(ip), None).expect("encode");
            let mut back = Message::new();
            back.unmarshal_binary(&m.raw).expect("decode");
            let mut a = XorMappedAddress::default();
            a.get_from_as(&back, ATTR_XOR_PEER_ADDRESS).expect("peer");
            // The IPv4-mapped form stays IPv6 on the wire.
            assert_eq!(a.ip, ip);
            FINGERPRINT.check(&back).expect("fingerprint");
        }
    }
}
