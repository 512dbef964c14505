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
use msocket::{Endpoint, EndpointConfig, Identity, PathPolicy};

/// Options every networked command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Key file (made by `msocket keygen`).
    #[arg(long, env = "MSOCKET_KEY", default_value_os_t = default_key_path())]
    pub key: PathBuf,
    /// Name service URL: tcp://HOST:PORT of an `msocketd name` server.
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

    pub fn endpoint(&self, ephemeral_ok: bool) -> Result<Endpoint, CliError> {
        let mut config = EndpointConfig::new(self.name_service()?);
        config.local_ips = self.bind.clone();
        config.flow.flow_deadline = Duration::from_secs(self.deadline);
        config.path_policy = self.policy;
        Ok(Endpoint::new(self.identity(ephemeral_ok)?, config))
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
