//! Endpoints and listeners for the app, and the platform's network entry point.
//!
//! An endpoint is made from a secret key and [`EndpointOptions`], every field of which is
//! checked here so a bad value is an `InvalidArgument` naming the field rather than odd
//! behaviour later. The platform's connectivity monitor reports its networks through
//! [`Endpoint::update_network`]: the first report creates a
//! [`PushedNetwork`](msocket::watch::PushedNetwork) that the endpoint follows
//! ([`msocket::Endpoint::follow_network`]), later ones push full snapshots into it. From
//! then on the core decides which addresses to use, retires paths on vanished ones and
//! re-publishes names, exactly as with the kernel's own watcher on Linux.
//!
//! A desktop app has no platform monitor: with `follow_system_network` the endpoint
//! follows the core's own watcher from its first listen or connect, as the Rust API does.
//! An `update_network` call then still wins: following a pushed network stops the core's
//! watcher for good, so the two never take turns at the endpoint's addresses.

use std::sync::{Arc, Mutex, MutexGuard};

use msocket::watch::PushedNetwork;
use msocket::{EndpointConfig, Identity, NetworkFollower, NetworkSource};
use tokio::sync::watch;

use crate::binder::AppBinder;
use crate::error::{guard, MsocketError};
use crate::events::OpenFlows;
use crate::flow::Flow;
use crate::pins::AppPins;
use crate::runtime::{self, call_until_released, millis, CancelToken};
use crate::types::{interfaces_to_core, parse_ip, NetworkInterface, PathPolicy};
use crate::{PinStore, SocketBinder};

/// Most fingerprints an allow-list takes.
pub const MAX_ALLOWED_PEERS: usize = 10_000;

/// The UDL's `EndpointOptions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointOptions {
    pub names_url: String,
    pub name_timeout_ms: u32,
    pub connect_timeout_ms: u32,
    pub flow_deadline_ms: u32,
    pub policy: PathPolicy,
    pub standby_paths: bool,
    pub use_loopback: bool,
    pub local_addresses: Vec<String>,
    pub follow_system_network: bool,
    pub listen_port: u16,
    pub allowed_peers: Option<Vec<String>>,
    pub relays: Vec<String>,
    pub relay_only: bool,
}

impl EndpointOptions {
    /// The options the UDL's defaults give, for the name service at `names_url`.
    pub fn new(names_url: impl Into<String>) -> EndpointOptions {
        EndpointOptions {
            names_url: names_url.into(),
            name_timeout_ms: 5_000,
            connect_timeout_ms: 20_000,
            flow_deadline_ms: 300_000,
            policy: PathPolicy::Backup,
            standby_paths: true,
            use_loopback: false,
            local_addresses: Vec::new(),
            follow_system_network: false,
            listen_port: 0,
            allowed_peers: None,
            relays: Vec::new(),
            relay_only: false,
        }
    }
}

/// Checks the secret key's length and turns it into an identity.
pub(crate) fn identity(key: &[u8]) -> Result<Identity, MsocketError> {
    let seed: [u8; msocket::identity::SEED_LEN] = key.try_into().map_err(|_| {
        MsocketError::InvalidArgument(format!(
            "a key is {} bytes (from generate_key); got {} bytes",
            msocket::identity::SEED_LEN,
            key.len()
        ))
    })?;
    Ok(Identity::from_seed(seed))
}

/// The core configuration `options` describe; the name service is not contacted.
pub(crate) fn config(options: &EndpointOptions) -> Result<EndpointConfig, MsocketError> {
    let nonzero = |value: u32, field: &str| {
        if value == 0 {
            Err(MsocketError::InvalidArgument(format!("{field} must be above 0 ms")))
        } else {
            Ok(millis(value))
        }
    };
    let name_timeout = nonzero(options.name_timeout_ms, "name_timeout_ms")?;
    let names = msocket::name::connect_url(options.names_url.trim(), name_timeout)?;
    let mut config = EndpointConfig::new(names);
    // On phones the platform's network monitor pushes the networks (`update_network`):
    // the app's sandbox may not see the kernel's, and the platform knows more (link type,
    // metered). A desktop app has no such monitor and asks for the core's own watcher.
    config.network =
        if options.follow_system_network { NetworkSource::System } else { NetworkSource::Application };
    config.connect_timeout = nonzero(options.connect_timeout_ms, "connect_timeout_ms")?;
    config.flow.flow_deadline = nonzero(options.flow_deadline_ms, "flow_deadline_ms")?;
    config.path_policy = options.policy.into();
    config.standby_paths = options.standby_paths;
    config.use_loopback = options.use_loopback;
    config.listen_port = options.listen_port;
    if options.local_addresses.len() > crate::types::MAX_ADDRESSES {
        return Err(MsocketError::InvalidArgument(format!(
            "{} local_addresses; at most {} are accepted",
            options.local_addresses.len(),
            crate::types::MAX_ADDRESSES
        )));
    }
    config.local_ips =
        options.local_addresses.iter().map(|a| parse_ip(a, "local_addresses")).collect::<Result<_, _>>()?;
    if let Some(allowed) = &options.allowed_peers {
        if allowed.len() > MAX_ALLOWED_PEERS {
            return Err(MsocketError::InvalidArgument(format!(
                "{} allowed_peers; at most {MAX_ALLOWED_PEERS} are accepted",
                allowed.len()
            )));
        }
        let parse = |fp: &String| {
            fp.trim().parse::<msocket::Fingerprint>().map_err(|e| {
                MsocketError::InvalidArgument(format!("allowed_peers: {fp:?} is not a key fingerprint: {e}"))
            })
        };
        config.allowed_peers = Some(allowed.iter().map(parse).collect::<Result<_, _>>()?);
    }
    if options.relays.len() > msocket::name::MAX_RELAYS {
        return Err(MsocketError::InvalidArgument(format!(
            "{} relays; at most {} are accepted",
            options.relays.len(),
            msocket::name::MAX_RELAYS
        )));
    }
    config.relays = options
        .relays
        .iter()
        .map(|r| r.trim().parse::<msocket::relay::RelayUrl>().map_err(|e| MsocketError::InvalidArgument(format!("relays: {e}"))))
        .collect::<Result<_, _>>()?;
    if options.relay_only && config.relays.is_empty() {
        return Err(MsocketError::InvalidArgument("relay_only needs at least one relay".into()));
    }
    config.relay_only = options.relay_only;
    Ok(config)
}

/// What a live endpoint holds.
struct Open {
    endpoint: msocket::Endpoint,
    /// The platform's network reports and the task following them, once one came.
    network: Option<(PushedNetwork, NetworkFollower)>,
}

/// The UDL's `Endpoint`.
pub struct Endpoint {
    fingerprint: String,
    open: Mutex<Option<Open>>,
    closed: watch::Sender<bool>,
    open_flows: OpenFlows,
}

impl Endpoint {
    /// An endpoint for `key` (see the UDL).
    pub fn new(
        key: Vec<u8>,
        options: EndpointOptions,
        binder: Option<Box<dyn SocketBinder>>,
        pins: Option<Box<dyn PinStore>>,
    ) -> Result<Endpoint, MsocketError> {
        guard("Endpoint", || {
            let identity = identity(&key)?;
            let mut config = config(&options)?;
            if let Some(binder) = binder {
                config.socket_binder = Some(Arc::new(AppBinder(binder)));
            }
            if let Some(pins) = pins {
                config.pins = Arc::new(AppPins(pins));
            }
            let fingerprint = identity.public().fingerprint();
            let endpoint = msocket::Endpoint::new(identity, config);
            Ok(Endpoint {
                fingerprint,
                open: Mutex::new(Some(Open { endpoint, network: None })),
                closed: watch::channel(false).0,
                open_flows: OpenFlows::new(),
            })
        })
    }

    fn lock(&self) -> MutexGuard<'_, Option<Open>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn closed_error(&self) -> MsocketError {
        MsocketError::Closed(format!("endpoint {} was closed", self.fingerprint))
    }

    /// The core endpoint, while open.
    fn endpoint(&self) -> Result<msocket::Endpoint, MsocketError> {
        self.lock().as_ref().map(|o| o.endpoint.clone()).ok_or_else(|| self.closed_error())
    }

    /// Runs `op` as the waiting call `what` (see [`runtime::call`]), failing it with
    /// `Closed` as soon as the endpoint is released.
    async fn wait<T: Send + 'static>(
        &self,
        what: &'static str,
        timeout_ms: u32,
        cancel: Option<Arc<CancelToken>>,
        op: impl std::future::Future<Output = Result<T, MsocketError>> + Send + 'static,
    ) -> Result<T, MsocketError> {
        call_until_released(what, timeout_ms, cancel, self.closed.subscribe(), self.closed_error(), op).await
    }

    /// The public fingerprint of this endpoint's identity.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    /// Starts serving `name`.
    pub async fn listen(
        &self,
        name: String,
        timeout_ms: u32,
        cancel: Option<Arc<CancelToken>>,
    ) -> Result<Arc<Listener>, MsocketError> {
        let endpoint = self.endpoint()?;
        let open_flows = self.open_flows.clone();
        self.wait("listen", timeout_ms, cancel, async move {
            let listener = endpoint.listen(&name).await?;
            Ok(Arc::new(Listener::new(listener, open_flows)))
        })
        .await
    }

    /// Opens a flow to `name` (`NAME` or `NAME#FINGERPRINT`; see the UDL). A call cancelled
    /// or timed out before the flow was handed over drops it, so the peer sees it end.
    pub async fn connect(
        &self,
        name: String,
        timeout_ms: u32,
        cancel: Option<Arc<CancelToken>>,
    ) -> Result<Arc<Flow>, MsocketError> {
        let endpoint = self.endpoint()?;
        let open_flows = self.open_flows.clone();
        self.wait("connect", timeout_ms, cancel, async move {
            let flow = endpoint.connect(&name).await?;
            Ok(Arc::new(Flow::new(flow, &open_flows)))
        })
        .await
    }

    /// Flows of this endpoint that are open (see the UDL).
    pub fn open_flows(&self) -> u32 {
        self.open_flows.count()
    }

    /// The count of open flows, as soon as it differs from `seen`.
    pub async fn open_flows_changed(&self, seen: u32, cancel: Option<Arc<CancelToken>>) -> Result<u32, MsocketError> {
        let open_flows = self.open_flows.clone();
        self.wait("open_flows_changed", u32::MAX, cancel, async move { Ok(open_flows.changed_from(seen).await) }).await
    }

    /// The platform's network snapshot (see the UDL).
    pub fn update_network(&self, interfaces: Vec<NetworkInterface>) -> Result<bool, MsocketError> {
        guard("update_network", || {
            let interfaces = interfaces_to_core(interfaces)?;
            let mut open = self.lock();
            let open = open.as_mut().ok_or_else(|| self.closed_error())?;
            match &open.network {
                Some((pushed, follower)) if !follower.is_finished() => Ok(pushed.push(interfaces)),
                _ => {
                    let pushed = PushedNetwork::new(interfaces);
                    let runtime = runtime::handle()?;
                    let _entered = runtime.enter();
                    let follower = open.endpoint.follow_network(pushed.subscribe());
                    open.network = Some((pushed, follower));
                    Ok(true)
                }
            }
        })
    }

    /// Whether the endpoint follows the system's network by itself right now (see
    /// `follow_system_network`). Not in the foreign interface: for tests.
    #[doc(hidden)]
    pub fn follows_system_network(&self) -> bool {
        self.lock().as_ref().is_some_and(|open| open.endpoint.follows_system_network())
    }

    /// The addresses this endpoint publishes for its names.
    pub fn published_addresses(&self) -> Vec<String> {
        match self.lock().as_ref() {
            Some(open) => open.endpoint.published_addrs().iter().map(ToString::to_string).collect(),
            None => Vec::new(),
        }
    }

    /// Closes the endpoint.
    pub fn release(&self) {
        let open = self.lock().take();
        self.closed.send_replace(true);
        let runtime = runtime::handle().ok();
        let _entered = runtime.as_ref().map(|r| r.enter());
        drop(open);
    }
}

/// The UDL's `Listener`.
pub struct Listener {
    name: String,
    /// Shared with a waiting `accept`, so `release` can let go of it without waiting for the
    /// accept to notice.
    listener: Mutex<Option<Arc<tokio::sync::Mutex<msocket::Listener>>>>,
    closed: watch::Sender<bool>,
    open_flows: OpenFlows,
}

impl Listener {
    fn new(listener: msocket::Listener, open_flows: OpenFlows) -> Listener {
        Listener {
            name: listener.name().to_string(),
            listener: Mutex::new(Some(Arc::new(tokio::sync::Mutex::new(listener)))),
            closed: watch::channel(false).0,
            open_flows,
        }
    }

    fn closed_error(&self) -> MsocketError {
        MsocketError::Closed(format!("the listener on {} was closed", self.name))
    }

    /// The name listened on.
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// The next flow a peer opened to this name.
    pub async fn accept(&self, timeout_ms: u32, cancel: Option<Arc<CancelToken>>) -> Result<Arc<Flow>, MsocketError> {
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| self.closed_error())?;
        let (name, open_flows) = (self.name.clone(), self.open_flows.clone());
        let accept = async move {
            match listener.lock().await.accept().await {
                Ok(flow) => Ok(Arc::new(Flow::new(flow, &open_flows))),
                Err(msocket::Error::Closed) => {
                    Err(MsocketError::Closed(format!("the listener on {name} stopped: its endpoint was closed")))
                }
                Err(e) => Err(e.into()),
            }
        };
        call_until_released("accept", timeout_ms, cancel, self.closed.subscribe(), self.closed_error(), accept).await
    }

    /// Stops listening.
    pub fn release(&self) {
        let listener = self.listener.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.closed.send_replace(true);
        drop(listener);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `EndpointOptions::new` gives Rust callers what the UDL's defaults give Kotlin and Swift.
    #[test]
    fn rust_defaults_are_the_udls() {
        let udl = include_str!("../../udl/msocket.udl");
        let o = EndpointOptions::new("tcp://names.test:7450");
        for line in [
            format!("u32 name_timeout_ms = {};", o.name_timeout_ms),
            format!("u32 connect_timeout_ms = {};", o.connect_timeout_ms),
            format!("u32 flow_deadline_ms = {};", o.flow_deadline_ms),
            format!("PathPolicy policy = \"{:?}\";", o.policy),
            format!("boolean standby_paths = {};", o.standby_paths),
            format!("boolean use_loopback = {};", o.use_loopback),
            format!("boolean follow_system_network = {};", o.follow_system_network),
            format!("u16 listen_port = {};", o.listen_port),
            format!("boolean relay_only = {};", o.relay_only),
        ] {
            assert!(udl.contains(&line), "the UDL does not say {line}");
        }
        assert!(udl.contains("sequence<string> local_addresses = [];") && o.local_addresses.is_empty());
        assert!(udl.contains("sequence<string>? allowed_peers = null;") && o.allowed_peers.is_none());
        assert!(udl.contains("sequence<string> relays = [];") && o.relays.is_empty());
    }

    /// The endpoint follows the system's network only when asked to, and never while
    /// addresses pin it.
    #[test]
    fn following_the_system_is_asked_for_and_pinned_addresses_switch_it_off() {
        let o = EndpointOptions::new("tcp://names.test:7450");
        let default = config(&o).unwrap();
        assert_eq!(default.network, NetworkSource::Application);
        assert!(!default.follows_system_network());
        let follow = EndpointOptions { follow_system_network: true, ..o.clone() };
        let following = config(&follow).unwrap();
        assert_eq!(following.network, NetworkSource::System);
        assert!(following.follows_system_network());
        let pinned = EndpointOptions { local_addresses: vec!["192.0.2.7".into()], ..follow };
        assert!(!config(&pinned).unwrap().follows_system_network());
    }
}
