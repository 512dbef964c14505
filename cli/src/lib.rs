//! The commands of `msocket`, the command-line tool: key generation, netcat-like pipes,
//! TCP forwarding and the demo; `msocket bench` runs `msocket-bench`'s benchmarks. The
//! binary (`src/main.rs`) parses the command line and calls these.

pub mod demo;
pub mod pipe;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use msocket::name::{connect_url, NameService};
use msocket::trust::PinFile;
use msocket::relay::RelayUrl;
use msocket::{Endpoint, EndpointConfig, Fingerprint, Identity, PathPolicy};

/// Options every networked command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Key file (made by `msocket keygen`).
    #[arg(long, env = "MSOCKET_KEY", default_value_os_t = default_key_path())]
    pub key: PathBuf,
    /// Name service URL: tcp://HOST:PORT of an `msocketd name` server, optionally with
    /// #FINGERPRINT of its key (as it prints at start) to refuse any other server.
    #[arg(long, env = "MSOCKET_NAMES", default_value = msocket::name::DEFAULT_NAMES_URL)]
    pub names: String,
    /// Local IP address to use (repeat for several), pinned: flows use only these and do
    /// not follow interface changes. Default: follow the system's interfaces (netlink on
    /// Linux), so flows survive Wi-Fi/cellular hand-offs and address changes.
    #[arg(long = "bind", value_name = "IP")]
    pub bind: Vec<IpAddr>,
    /// Seconds a flow may go without any path before it fails.
    #[arg(long, default_value_t = 300)]
    pub deadline: u64,
    /// How flows this side opens use several local addresses (the accepting side
    /// follows): backup (one path, the others hot standbys), energy (cellular only while
    /// Wi-Fi is gone or cannot keep up; no idle standby), performance (every path at once),
    /// redundant (small writes copied on every path).
    #[arg(long, env = "MSOCKET_POLICY", default_value = "backup", value_name = "POLICY")]
    pub policy: PathPolicy,
    /// Pin file: the keys of every name looked up, kept from the first lookup on (like
    /// ssh's known_hosts); a name whose keys changed is refused. Default: `pins` next to
    /// the key file.
    #[arg(long, env = "MSOCKET_PINS", value_name = "FILE")]
    pub pins: Option<PathBuf>,
}

/// How a listener is reached from behind NAT.
#[derive(Debug, Clone, clap::Args)]
pub struct Relays {
    /// Relay (`msocketd relay`) to register at while listening, as HOST:PORT (repeat for
    /// several; MSOCKET_RELAYS takes a comma-separated list). The relays that hold a live
    /// registration are listed in the name record, so peers that cannot reach this host
    /// directly (NAT, firewall) are spliced to it through one; the flow stays end-to-end
    /// encrypted.
    #[arg(long = "relay", value_name = "HOST:PORT", env = "MSOCKET_RELAYS", value_delimiter = ',')]
    pub relays: Vec<RelayUrl>,
    /// Publish no address of this host, only its relays: peers and the name service never
    /// learn where it is (every flow is relayed).
    #[arg(long, requires = "relays")]
    pub relay_only: bool,
}

/// Who may open flows to a listener.
#[derive(Debug, Clone, clap::Args)]
pub struct Allow {
    /// Accept flows only from peers with this key fingerprint (repeatable; a peer's
    /// `msocket keygen` or `listen` prints it). Others are refused before any data.
    #[arg(long = "allow", value_name = "FINGERPRINT")]
    pub allow: Vec<Fingerprint>,
    /// File of allowed fingerprints, one per line (text after the fingerprint and lines
    /// starting with # are comments). Default: `allowed_peers` next to the key file, when
    /// it exists. Without --allow or a file, anyone who knows the name may connect.
    #[arg(long, env = "MSOCKET_ALLOW_FILE", value_name = "FILE")]
    pub allow_file: Option<PathBuf>,
}

/// Largest allow file read.
const MAX_ALLOW_FILE: u64 = 1 << 20;

impl Allow {
    /// The allow-list (`None`: anyone), from the flags and the file.
    pub fn list(&self, key: &Path) -> Result<Option<Vec<Fingerprint>>, CliError> {
        let (file, explicit) = match &self.allow_file {
            Some(f) => (f.clone(), true),
            None => (key.with_file_name("allowed_peers"), false),
        };
        let mut list = self.allow.clone();
        match std::fs::metadata(&file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {}
            Err(e) => return Err(CliError(format!("allow file {}: {e}", file.display()))),
            Ok(meta) if meta.len() > MAX_ALLOW_FILE => {
                return Err(CliError(format!("allow file {} is over {MAX_ALLOW_FILE} bytes", file.display())))
            }
            Ok(_) => {
                let text = std::fs::read_to_string(&file).map_err(|e| CliError(format!("allow file {}: {e}", file.display())))?;
                for (i, line) in text.lines().enumerate() {
                    let Some(word) = line.split_whitespace().next().filter(|w| !w.starts_with('#')) else { continue };
                    let fp = word
                        .parse()
                        .map_err(|e| CliError(format!("allow file {}, line {}: {e}", file.display(), i + 1)))?;
                    list.push(fp);
                }
                if list.is_empty() {
                    return Err(CliError(format!("allow file {} lists no fingerprint; it would refuse everyone", file.display())));
                }
            }
        }
        Ok((!list.is_empty()).then_some(list))
    }
}

/// `~/.config/msocket/key`, or `./msocket.key` without a home directory.
pub fn default_key_path() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) => Path::new(&home).join(".config/msocket/key"),
        None => PathBuf::from("msocket.key"),
    }
}

/// A CLI failure: the message printed before exiting with status 1.
#[derive(Debug)]
pub struct CliError(pub String);

impl<E: std::fmt::Display> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError(e.to_string())
    }
}

impl Common {
    /// The identity in `--key`; `ephemeral_ok` allows a throw-away one when the file is
    /// missing (a client needs no published name).
    pub fn identity(&self, ephemeral_ok: bool) -> Result<Identity, CliError> {
        match Identity::load(&self.key) {
            Ok(id) => Ok(id),
            Err(msocket::IdentityError::Io { source, .. })
                if ephemeral_ok && source.kind() == std::io::ErrorKind::NotFound =>
            {
                tracing::info!(key = %self.key.display(), "no key file; using a throw-away identity");
                Ok(Identity::generate()?)
            }
            Err(e) => Err(CliError(format!("{e} (create one with `msocket keygen --key {}`)", self.key.display()))),
        }
    }

    pub fn name_service(&self) -> Result<Arc<dyn NameService>, CliError> {
        Ok(connect_url(&self.names, Duration::from_secs(5))?)
    }

    /// The endpoint these options describe; `allowed` is the listener's allow-list,
    /// `relays` its relays.
    pub fn endpoint(&self, ephemeral_ok: bool, allowed: Option<Vec<Fingerprint>>, relays: Option<&Relays>) -> Result<Endpoint, CliError> {
        let mut config = EndpointConfig::new(self.name_service()?);
        if let Some(r) = relays {
            config.relays = r.relays.clone();
            config.relay_only = r.relay_only;
        }
        config.local_ips = self.bind.clone();
        config.flow.flow_deadline = Duration::from_secs(self.deadline);
        config.path_policy = self.policy;
        config.pins = Arc::new(PinFile::new(self.pins_path()));
        config.allowed_peers = allowed;
        Ok(Endpoint::new(self.identity(ephemeral_ok)?, config))
    }

    /// `--pins`, or `pins` next to the key file.
    pub fn pins_path(&self) -> PathBuf {
        self.pins.clone().unwrap_or_else(|| self.key.with_file_name("pins"))
    }
}

/// `msocket keygen`: writes a new key file and prints its public keys.
pub fn keygen(path: &Path) -> Result<(), CliError> {
    let id = Identity::generate()?;
    id.save(path)?;
    let public = id.public();
    println!("key written to {}", path.display());
    println!("fingerprint {}", public.fingerprint());
    println!("signing {}", hex::encode(public.signing));
    println!("noise {}", hex::encode(public.noise));
    Ok(())
}
