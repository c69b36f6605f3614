//! folio's own broker connections, for the consumer-group protocol and the topic admin
//! (replication settings, configs, the cluster's size) that rskafka lacks.
//!
//! One [`BrokerConnection`] is one TCP (optionally TLS) stream carrying Kafka frames: a
//! 4-byte big-endian length, then a request header and body encoded by the `kafka-protocol`
//! crate. A connection negotiates versions once (ApiVersions) and then sends every request
//! at the highest version both sides support; it authenticates with SASL when configured,
//! with the same settings rskafka is given. Requests go one at a time, so the correlation
//! id of each answer must be the one just sent. Any I/O error or timeout breaks the
//! connection; its owner drops it and connects again.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::TopicName;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FindCoordinatorRequest, MetadataRequest,
    MetadataResponse, RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::messages::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, CreateTopicsRequest,
    CreateTopicsResponse, DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, FindCoordinatorResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetFetchRequest, OffsetFetchResponse, SaslAuthenticateResponse, SaslHandshakeResponse,
};
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::{
    Decodable, Encodable, HeaderVersion, Message, StrBytes, VersionRange,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use crate::config::{KafkaConfig, SaslSettings};
use crate::errors::KAFKA;

/// Frames larger than this are refused rather than allocated.
const MAX_FRAME: usize = 64 * 1024 * 1024;
/// Kafka's UNSUPPORTED_VERSION error code.
const UNSUPPORTED_VERSION: i16 = 35;

#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("cannot connect to {addr}: {msg}")]
    Connect { addr: String, msg: String },
    #[error("connection to {addr} failed: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr} did not answer within {after:?}")]
    Timeout { addr: String, after: Duration },
    #[error("connection to {0} is broken")]
    Broken(String),
    #[error("kafka protocol: {0}")]
    Protocol(String),
    #[error("the broker does not support {api:?} at versions {ours} (it offers {theirs})")]
    Unsupported {
        api: ApiKey,
        ours: VersionRange,
        theirs: String,
    },
    #[error("SASL authentication failed: {0}")]
    Sasl(String),
    #[error("TLS with {addr} refused: {msg}")]
    Tls { addr: String, msg: String },
}

impl WireError {
    /// True when the connection is unusable and trying another (or later) may help.
    pub(crate) fn is_connection(&self) -> bool {
        matches!(
            self,
            WireError::Connect { .. }
                | WireError::Io { .. }
                | WireError::Timeout { .. }
                | WireError::Broken(_)
        )
    }

    /// True when the broker or TLS refused folio's credentials or settings: retrying
    /// changes nothing until they are fixed.
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(self, WireError::Sasl(_) | WireError::Tls { .. })
    }

    pub(crate) fn into_domain(self) -> folio_domain::Error {
        // A refused login or certificate leaves Kafka unusable to this process, like a
        // broker that is down; the message says which it is.
        if self.is_connection() || self.is_refusal() {
            folio_domain::Error::Unavailable(KAFKA, self.to_string())
        } else {
            folio_domain::Error::Internal(format!("kafka: {self}"))
        }
    }
}

/// The TLS error behind an I/O error, if rustls raised it.
fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// rustls refusing the broker (its certificate) or the broker refusing ours (an alert) is a
/// setting to fix, not a connection to retry.
fn tls_refusal(addr: &str, refused: &rustls::Error) -> WireError {
    WireError::Tls {
        addr: addr.to_string(),
        msg: refused.to_string(),
    }
}

fn protocol(e: impl std::fmt::Display) -> WireError {
    WireError::Protocol(e.to_string())
}

/// A request folio sends, with its API key and answer. (`kafka-protocol` ties its own
/// request trait to its broker-side feature; folio only needs the client half.)
pub(crate) trait Request: Encodable + HeaderVersion + Message {
    const KEY: i16;
    type Response: Decodable + HeaderVersion;
}

macro_rules! requests {
    ($($req:ty => $resp:ty, $key:ident;)*) => {
        $(impl Request for $req {
            const KEY: i16 = ApiKey::$key as i16;
            type Response = $resp;
        })*
    };
}

requests! {
    ApiVersionsRequest => ApiVersionsResponse, ApiVersions;
    SaslHandshakeRequest => SaslHandshakeResponse, SaslHandshake;
    SaslAuthenticateRequest => SaslAuthenticateResponse, SaslAuthenticate;
    MetadataRequest => MetadataResponse, Metadata;
    FindCoordinatorRequest => FindCoordinatorResponse, FindCoordinator;
    ConsumerGroupHeartbeatRequest => ConsumerGroupHeartbeatResponse, ConsumerGroupHeartbeat;
    OffsetFetchRequest => OffsetFetchResponse, OffsetFetch;
    OffsetCommitRequest => OffsetCommitResponse, OffsetCommit;
    CreateTopicsRequest => CreateTopicsResponse, CreateTopics;
    DescribeConfigsRequest => DescribeConfigsResponse, DescribeConfigs;
    DescribeClusterRequest => DescribeClusterResponse, DescribeCluster;
    JoinGroupRequest => JoinGroupResponse, JoinGroup;
    SyncGroupRequest => SyncGroupResponse, SyncGroup;
    HeartbeatRequest => HeartbeatResponse, Heartbeat;
    LeaveGroupRequest => LeaveGroupResponse, LeaveGroup;
}

/// The version ranges a broker supports, by API key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ApiVersions(HashMap<i16, (i16, i16)>);

impl ApiVersions {
    pub(crate) fn from_response(r: &ApiVersionsResponse) -> Self {
        ApiVersions(
            r.api_keys
                .iter()
                .map(|k| (k.api_key, (k.min_version, k.max_version)))
                .collect(),
        )
    }

    #[cfg(test)]
    pub(crate) fn from_ranges(ranges: &[(ApiKey, i16, i16)]) -> Self {
        ApiVersions(
            ranges
                .iter()
                .map(|&(k, lo, hi)| (k as i16, (lo, hi)))
                .collect(),
        )
    }

    /// The highest version of `R` that both folio (through `kafka-protocol`) and the broker
    /// support.
    pub(crate) fn pick<R: Request>(&self) -> Result<i16, WireError> {
        self.pick_key(R::KEY, R::VERSIONS)
    }

    pub(crate) fn pick_key(&self, key: i16, ours: VersionRange) -> Result<i16, WireError> {
        let api = ApiKey::try_from(key).map_err(|_| protocol(format!("unknown api key {key}")))?;
        let Some(&(lo, hi)) = self.0.get(&key) else {
            return Err(WireError::Unsupported {
                api,
                ours,
                theirs: "none".into(),
            });
        };
        let both = ours.intersect(&VersionRange { min: lo, max: hi });
        if both.is_empty() {
            return Err(WireError::Unsupported {
                api,
                ours,
                theirs: format!("{lo}..{hi}"),
            });
        }
        Ok(both.max)
    }
}

/// Encodes one request frame: length prefix, header (at the header version this API and
/// version call for), body.
pub(crate) fn encode_request<R: Request>(
    req: &R,
    version: i16,
    correlation_id: i32,
    client_id: &StrBytes,
) -> Result<BytesMut, WireError> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(client_id.clone()));
    let mut buf = BytesMut::with_capacity(128);
    buf.put_i32(0);
    header
        .encode(&mut buf, R::header_version(version))
        .map_err(protocol)?;
    req.encode(&mut buf, version).map_err(protocol)?;
    let len = i32::try_from(buf.len() - 4).map_err(protocol)?;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Decodes a response frame (without its length prefix), checking the correlation id.
pub(crate) fn decode_response<R: Request>(
    mut frame: Bytes,
    version: i16,
    correlation_id: i32,
) -> Result<R::Response, WireError> {
    let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version))
        .map_err(protocol)?;
    if header.correlation_id != correlation_id {
        return Err(protocol(format!(
            "answer to request {} arrived for request {correlation_id}",
            header.correlation_id
        )));
    }
    R::Response::decode(&mut frame, version).map_err(protocol)
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

/// What a connection needs from the configuration.
#[derive(Clone)]
pub(crate) struct ConnectSettings {
    pub client_id: StrBytes,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub sasl: Option<SaslSettings>,
    pub timeout: Duration,
}

impl ConnectSettings {
    pub(crate) fn from_config(cfg: &KafkaConfig) -> Self {
        ConnectSettings {
            client_id: StrBytes::from_string(cfg.client_id.clone()),
            tls: cfg.tls.clone(),
            sasl: cfg.sasl.clone(),
            timeout: cfg.request_deadline.min(Duration::from_secs(10)),
        }
    }
}

/// One connection to one broker. See the module docs.
pub(crate) struct BrokerConnection {
    addr: String,
    stream: Box<dyn Stream>,
    versions: ApiVersions,
    next_id: i32,
    client_id: StrBytes,
    timeout: Duration,
    broken: bool,
}

impl std::fmt::Debug for BrokerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConnection")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl BrokerConnection {
    /// Connects, negotiates versions and authenticates.
    pub(crate) async fn connect(addr: &str, s: &ConnectSettings) -> Result<Self, WireError> {
        let connect_err = |msg: String| WireError::Connect {
            addr: addr.to_string(),
            msg,
        };
        let tcp = tokio::time::timeout(s.timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| connect_err(format!("no answer within {:?}", s.timeout)))?
            .map_err(|e| connect_err(e.to_string()))?;
        tcp.set_nodelay(true)
            .map_err(|e| connect_err(e.to_string()))?;
        let stream: Box<dyn Stream> = match &s.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let host = host_of(addr);
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| connect_err(format!("bad TLS server name {host}: {e}")))?;
                let tls = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| match rustls_error(&e) {
                        Some(refused) => tls_refusal(addr, refused),
                        None => connect_err(format!("TLS handshake: {e}")),
                    })?;
                Box::new(tls)
            }
        };
        let mut conn = BrokerConnection {
            addr: addr.to_string(),
            stream,
            versions: ApiVersions::default(),
            next_id: 0,
            client_id: s.client_id.clone(),
            timeout: s.timeout,
            broken: false,
        };
        conn.negotiate().await?;
        if let Some(sasl) = &s.sasl {
            conn.authenticate(sasl).await?;
        }
        debug!(addr, "broker connection ready");
        Ok(conn)
    }

    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    /// The version this connection uses for `R`.
    pub(crate) fn version<R: Request>(&self) -> Result<i16, WireError> {
        self.versions.pick::<R>()
    }

    /// Sends `req` at the negotiated version and waits for its answer.
    pub(crate) async fn request<R: Request>(&mut self, req: &R) -> Result<R::Response, WireError> {
        let version = self.version::<R>()?;
        self.request_at(req, version).await
    }

    pub(crate) async fn request_at<R: Request>(
        &mut self,
        req: &R,
        version: i16,
    ) -> Result<R::Response, WireError> {
        let (id, frame) = self.round_trip(req, version).await?;
        decode_response::<R>(frame, version, id)
    }

    /// Like [`BrokerConnection::request`], waiting up to `timeout` for the answer instead
    /// of the connection's own limit: a JoinGroup is held by the coordinator until every
    /// member has rejoined (up to the rebalance timeout).
    pub(crate) async fn request_within<R: Request>(
        &mut self,
        req: &R,
        timeout: Duration,
    ) -> Result<R::Response, WireError> {
        let version = self.version::<R>()?;
        let usual = std::mem::replace(&mut self.timeout, timeout);
        let answer = self.round_trip(req, version).await;
        self.timeout = usual;
        let (id, frame) = answer?;
        decode_response::<R>(frame, version, id)
    }

    async fn round_trip<R: Request>(
        &mut self,
        req: &R,
        version: i16,
    ) -> Result<(i32, Bytes), WireError> {
        if self.broken {
            return Err(WireError::Broken(self.addr.clone()));
        }
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        let out = encode_request(req, version, id, &self.client_id)?;
        // A cancelled or failed exchange leaves the stream mid-frame: never reuse it.
        self.broken = true;
        let stream = &mut self.stream;
        let exchange = async {
            stream.write_all(&out).await?;
            stream.flush().await?;
            let len = stream.read_i32().await?;
            let len = usize::try_from(len)
                .ok()
                .filter(|l| *l <= MAX_FRAME)
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("bad frame length {len}"),
                    )
                })?;
            let mut body = vec![0u8; len];
            stream.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>(Bytes::from(body))
        };
        let frame = match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => {
                return Err(WireError::Timeout {
                    addr: self.addr.clone(),
                    after: self.timeout,
                })
            }
            Ok(Err(source)) => {
                // Under TLS 1.3 a broker refuses a client certificate after the handshake,
                // with an alert on the first read. Any other failure of an established
                // connection stays one to retry on a new connection.
                return Err(match rustls_error(&source) {
                    Some(alert @ rustls::Error::AlertReceived(_)) => tls_refusal(&self.addr, alert),
                    _ => WireError::Io {
                        addr: self.addr.clone(),
                        source,
                    },
                });
            }
            Ok(Ok(f)) => f,
        };
        self.broken = false;
        Ok((id, frame))
    }

    /// ApiVersions at our highest version; a broker that does not know it answers at v0
    /// with its own range, and we ask again at the highest common version.
    async fn negotiate(&mut self) -> Result<(), WireError> {
        let ours = ApiVersionsRequest::VERSIONS;
        let mut version = ours.max;
        for _ in 0..2 {
            let req = ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("folio"))
                .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
            let (id, frame) = self.round_trip(&req, version).await?;
            let resp = match decode_response::<ApiVersionsRequest>(frame.clone(), version, id) {
                Ok(r) if r.error_code != UNSUPPORTED_VERSION => r,
                _ => decode_response::<ApiVersionsRequest>(frame, 0, id)?,
            };
            if resp.error_code == UNSUPPORTED_VERSION {
                let theirs = resp
                    .api_keys
                    .iter()
                    .find(|k| k.api_key == ApiKey::ApiVersions as i16)
                    .map_or(0, |k| k.max_version);
                version = theirs.min(ours.max);
                continue;
            }
            if resp.error_code != 0 {
                return Err(protocol(format!(
                    "ApiVersions failed with error {}",
                    resp.error_code
                )));
            }
            self.versions = ApiVersions::from_response(&resp);
            return Ok(());
        }
        Err(protocol("ApiVersions negotiation did not converge"))
    }

    async fn authenticate(&mut self, s: &SaslSettings) -> Result<(), WireError> {
        let hs = SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_static_str(s.mechanism.name()));
        let resp = self.request(&hs).await?;
        if resp.error_code != 0 {
            let offered: Vec<&str> = resp.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(WireError::Sasl(format!(
                "mechanism {} refused; the broker offers {offered:?}",
                s.mechanism.name()
            )));
        }
        let sasl_err = |e: &dyn std::fmt::Display| WireError::Sasl(e.to_string());
        let config = rsasl::config::SASLConfig::with_credentials(
            None,
            s.username.clone(),
            s.password.clone(),
        )
        .map_err(|e| sasl_err(&e))?;
        let client = rsasl::prelude::SASLClient::new(config);
        let mech = rsasl::prelude::Mechname::parse(s.mechanism.name().as_bytes())
            .map_err(|e| sasl_err(&e))?;
        let mut session = client.start_suggested(&[mech]).map_err(|e| sasl_err(&e))?;
        let mut received: Option<Bytes> = None;
        loop {
            let mut out = Cursor::new(Vec::new());
            let state = session
                .step(received.as_deref(), &mut out)
                .map_err(|e| sasl_err(&e))?;
            if state.has_sent_message() {
                let req = SaslAuthenticateRequest::default()
                    .with_auth_bytes(Bytes::from(out.into_inner()));
                let resp = self.request(&req).await?;
                if resp.error_code != 0 {
                    return Err(WireError::Sasl(resp.error_message.map_or_else(
                        || format!("error {}", resp.error_code),
                        |m| m.to_string(),
                    )));
                }
                received = Some(resp.auth_bytes);
            }
            if state.is_finished() {
                return Ok(());
            }
        }
    }

    /// Topic metadata for the named topics: name -> (id, partition count).
    pub(crate) async fn topic_metadata(
        &mut self,
        names: &[String],
    ) -> Result<MetadataResponse, WireError> {
        let req = MetadataRequest::default().with_topics(Some(
            names
                .iter()
                .map(|n| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(n.clone()))))
                })
                .collect(),
        ));
        if self.version::<MetadataRequest>()? < 10 {
            return Err(protocol(
                "the broker predates topic ids (Metadata v10); folio needs Kafka 3.7 or newer",
            ));
        }
        self.request(&req).await
    }

    /// The group coordinator's `host:port`. Retriable errors (the coordinator still
    /// loading) come back as `Ok(None)`.
    pub(crate) async fn find_coordinator(
        &mut self,
        group: &str,
    ) -> Result<Option<String>, WireError> {
        let version = self.version::<FindCoordinatorRequest>()?;
        let key = StrBytes::from_string(group.to_string());
        let req = if version >= 4 {
            FindCoordinatorRequest::default()
                .with_key_type(0)
                .with_coordinator_keys(vec![key])
        } else {
            FindCoordinatorRequest::default()
                .with_key_type(0)
                .with_key(key)
        };
        let resp = self.request_at(&req, version).await?;
        let (error, host, port, message) = if version >= 4 {
            let c = resp
                .coordinators
                .into_iter()
                .next()
                .ok_or_else(|| protocol("FindCoordinator answered without coordinators"))?;
            (c.error_code, c.host, c.port, c.error_message)
        } else {
            (resp.error_code, resp.host, resp.port, resp.error_message)
        };
        match error {
            0 => Ok(Some(format!("{}:{}", host.as_str(), port))),
            // COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR
            14..=16 => Ok(None),
            e => Err(protocol(format!(
                "FindCoordinator failed with error {e}: {}",
                message.as_ref().map_or("", |m| m.as_str())
            ))),
        }
    }
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Connects to the first bootstrap broker that answers.
pub(crate) async fn connect_any(
    bootstrap: &[String],
    s: &ConnectSettings,
) -> Result<BrokerConnection, WireError> {
    let mut last = WireError::Connect {
        addr: String::new(),
        msg: "no bootstrap brokers configured".into(),
    };
    for addr in bootstrap {
        match BrokerConnection::connect(addr, s).await {
            Ok(c) => return Ok(c),
            Err(e) => {
                debug!(addr, error = %e, "bootstrap broker unreachable");
                last = e;
            }
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_length_header_and_body() {
        let req = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(kafka_protocol::messages::GroupId(
                StrBytes::from_static_str("g"),
            ))
            .with_member_id(StrBytes::from_static_str("m"))
            .with_member_epoch(7);
        let client = StrBytes::from_static_str("folio");
        let frame = encode_request(&req, 1, 42, &client).expect("encodes");
        let len = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(len, frame.len() - 4);
        let mut body = frame.freeze().slice(4..);
        let header =
            kafka_protocol::protocol::decode_request_header_from_buffer(&mut body).expect("header");
        assert_eq!(
            header.request_api_key,
            ApiKey::ConsumerGroupHeartbeat as i16
        );
        assert_eq!(header.request_api_version, 1);
        assert_eq!(header.correlation_id, 42);
        assert_eq!(header.client_id.as_ref().map(|c| c.as_str()), Some("folio"));
        let back = ConsumerGroupHeartbeatRequest::decode(&mut body, 1).expect("body");
        assert_eq!(back, req);
    }

    #[test]
    fn responses_are_matched_by_correlation_id() {
        let resp = ConsumerGroupHeartbeatResponse::default()
            .with_member_epoch(3)
            .with_heartbeat_interval_ms(1000);
        let mut buf = BytesMut::new();
        let version = 1;
        ResponseHeader::default()
            .with_correlation_id(9)
            .encode(
                &mut buf,
                ConsumerGroupHeartbeatResponse::header_version(version),
            )
            .expect("header");
        resp.encode(&mut buf, version).expect("body");
        let frame = buf.freeze();
        let got = decode_response::<ConsumerGroupHeartbeatRequest>(frame.clone(), version, 9)
            .expect("decodes");
        assert_eq!(got.member_epoch, 3);
        assert_eq!(got.heartbeat_interval_ms, 1000);
        assert!(decode_response::<ConsumerGroupHeartbeatRequest>(frame, version, 10).is_err());
    }

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        let broker = ApiVersions::from_ranges(&[
            (ApiKey::ConsumerGroupHeartbeat, 0, 1),
            (ApiKey::OffsetCommit, 0, 10),
            (ApiKey::Metadata, 0, 8),
        ]);
        assert_eq!(
            broker
                .pick::<ConsumerGroupHeartbeatRequest>()
                .expect("common"),
            1
        );
        // kafka-protocol encodes OffsetCommit up to v9; the broker's v10 is not ours.
        assert_eq!(broker.pick::<OffsetCommitRequest>().expect("common"), 9);
        assert_eq!(broker.pick::<MetadataRequest>().expect("common"), 8);
        // An API the broker lacks, and one with no common version.
        assert!(broker.pick::<FindCoordinatorRequest>().is_err());
        let old = ApiVersions::from_ranges(&[(ApiKey::OffsetCommit, 0, 1)]);
        assert!(matches!(
            old.pick::<OffsetCommitRequest>(),
            Err(WireError::Unsupported { .. })
        ));
    }

    #[test]
    fn host_of_strips_port_and_brackets() {
        assert_eq!(host_of("broker.example:9093"), "broker.example");
        assert_eq!(host_of("[::1]:9092"), "::1");
    }
}
