//! The daemon's configuration: a TOML file, overridden by command-line flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pare_fs::policy::Mode;
use pare_fs::view::Transport;
use serde::Deserialize;

/// Everything the daemon can be told. Every field has a default.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// State directory: `metadata.db`, `snapshots/`, `views/`, `profiles/`.
    pub root: PathBuf,
    /// Unix socket containerd connects to.
    pub address: PathBuf,
    /// Permission bits of the socket, as an octal string ("0600", "0660").
    pub socket_mode: String,
    /// Group owning the socket (name or numeric id); none keeps root's group.
    pub socket_group: Option<String>,
    /// Log filter (error, warn, info, debug, trace, or a tracing filter).
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Serve Prometheus metrics at `http://ADDR/metrics`; off when unset.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Profiling rules.
    pub profile: ProfileConfig,
    /// View settings.
    pub view: ViewConfig,
}

/// Log output format.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The mode of images that have none of their own (set by `pare mode`),
/// and how often journals are flushed.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProfileConfig {
    /// The mode of images without a mode of their own, outside the
    /// namespaces of `namespace_modes`.
    pub default_mode: Mode,
    /// The mode per containerd namespace (`{ "k8s.io" = "learn" }`).
    pub namespace_modes: BTreeMap<String, Mode>,
    /// Older spelling: `false` means `default_mode = "off"` everywhere.
    pub enabled: bool,
    /// Older spelling: these namespaces are `off`.
    pub disabled_namespaces: Vec<String>,
    /// How long an access may wait in memory before it is written, in ms.
    pub flush_interval_ms: u64,
    /// Learn containers in a row without a new first access before an image
    /// is settled (its new containers run on plain overlayfs); 0: never.
    pub settle_after: u64,
    /// The fraction (0.0-1.0) of a settled image's containers that still
    /// learn, deterministically (0.05: every 20th; 0: none).
    pub sample_rate: f64,
}

/// How views are served.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ViewConfig {
    /// Serving threads per view; by default the machine's parallelism
    /// between 2 and 8 ([`pare_fs::view::default_threads`]).
    pub threads: usize,
    /// Use FUSE passthrough for file reads when the kernel offers it.
    pub passthrough: bool,
    /// How requests travel between the kernel and a view: `auto` (FUSE
    /// over io_uring when the kernel offers it), `io-uring` or `dev-fuse`.
    pub transport: Transport,
    /// How long a view server may take to mount, in ms (then the Prepare fails).
    pub start_timeout_ms: u64,
    /// How long a view server may take to unmount and exit, in ms (then its
    /// connection is aborted, or it is left serving users elsewhere).
    pub stop_timeout_ms: u64,
    /// How long an image's view stays mounted after its last container, so
    /// that sequential containers find it warm (0: it goes with it).
    pub linger_seconds: u64,
    /// The most views lingering at once; past it the longest idle goes.
    pub max_lingering: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: PathBuf::from("/var/lib/pare"),
            address: PathBuf::from("/run/pare/snapshotter.sock"),
            socket_mode: "0600".into(),
            socket_group: None,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            metrics_address: None,
            profile: ProfileConfig::default(),
            view: ViewConfig::default(),
        }
    }
}

impl Default for ProfileConfig {
    fn default() -> Self {
        ProfileConfig {
            default_mode: Mode::Learn,
            namespace_modes: BTreeMap::new(),
            enabled: true,
            disabled_namespaces: Vec::new(),
            flush_interval_ms: 10,
            settle_after: 5,
            sample_rate: 0.05,
        }
    }
}

impl Default for ViewConfig {
    fn default() -> Self {
        ViewConfig {
            threads: pare_fs::view::default_threads(),
            passthrough: true,
            transport: Transport::Auto,
            start_timeout_ms: 10_000,
            stop_timeout_ms: 5_000,
            linger_seconds: 30,
            max_lingering: 16,
        }
    }
}

/// Why a configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("config: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values a file can get wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.socket_mode_bits()?;
        if self.view.threads == 0 {
            return Err(ConfigError::Invalid(
                "view.threads must be at least 1".into(),
            ));
        }
        if self.view.start_timeout_ms == 0 || self.view.stop_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "view.start_timeout_ms and view.stop_timeout_ms must be at least 1".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.profile.sample_rate) {
            return Err(ConfigError::Invalid(format!(
                "profile.sample_rate must be between 0.0 and 1.0, not {}",
                self.profile.sample_rate
            )));
        }
        if self.profile.flush_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "profile.flush_interval_ms must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The socket mode as bits.
    pub fn socket_mode_bits(&self) -> Result<u32, ConfigError> {
        u32::from_str_radix(self.socket_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "socket_mode {:?} is not an octal permission like \"0660\"",
                    self.socket_mode
                ))
            })
    }

    /// The mode of an image of `namespace` that has no mode of its own:
    /// `off` when the older `enabled = false` or `disabled_namespaces` say
    /// so, else the namespace's mode, else `default_mode`.
    pub fn mode_of(&self, namespace: &str) -> Mode {
        let p = &self.profile;
        if !p.enabled || p.disabled_namespaces.iter().any(|n| n == namespace) {
            return Mode::Off;
        }
        p.namespace_modes
            .get(namespace)
            .copied()
            .unwrap_or(p.default_mode)
    }

    /// How long views linger, as the view table takes it.
    pub fn lingering(&self) -> crate::views::Lingering {
        crate::views::Lingering {
            linger: std::time::Duration::from_secs(self.view.linger_seconds),
            max: self.view.max_lingering,
        }
    }

    /// When images settle, as the snapshots take it.
    pub fn settling(&self) -> crate::snapshots::Settling {
        crate::snapshots::Settling {
            after: self.profile.settle_after,
            every: pare_fs::profile::settle::SettleState::every_of_rate(self.profile.sample_rate),
        }
    }

    /// Whether containers of `namespace` get a view by default (a mode other than `off`).
    pub fn profiles(&self, namespace: &str) -> bool {
        self.mode_of(namespace) != Mode::Off
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses_and_rules_apply_per_namespace() {
        let config: Config = toml::from_str(
            r#"
            root = "/srv/pare"
            address = "/run/p.sock"
            socket_mode = "0660"
            socket_group = "containerd"
            log_format = "json"
            metrics_address = "127.0.0.1:9102"
            [profile]
            disabled_namespaces = ["k8s.io"]
            flush_interval_ms = 50
            [view]
            threads = 4
            passthrough = false
            transport = "dev-fuse"
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.root, PathBuf::from("/srv/pare"));
        assert_eq!(config.socket_mode_bits().unwrap(), 0o660);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.metrics_address, Some(([127, 0, 0, 1], 9102).into()));
        assert!(config.profiles("default"));
        assert!(!config.profiles("k8s.io"));
        assert_eq!(config.view.threads, 4);
        assert_eq!(config.view.transport, Transport::DevFuse);
        let settling = Config::default().settling();
        assert_eq!((settling.after, settling.every), (5, Some(20)));
    }

    #[test]
    fn the_example_file_states_the_defaults() {
        let example: Config =
            toml::from_str(include_str!("../../examples/pare-snapshotter.toml")).unwrap();
        example.validate().unwrap();
        // The example leaves `threads` commented out; everything else it
        // spells out is the default.
        assert_eq!(example, Config::default());
    }

    #[test]
    fn mistakes_are_reported() {
        assert!(toml::from_str::<Config>("rooot = \"/x\"").is_err());
        let err = toml::from_str::<Config>("[view]\ntransport = \"uring\"").unwrap_err();
        assert!(err.to_string().contains("io-uring"), "{err}");
        let bad_mode = Config {
            socket_mode: "rw-rw----".into(),
            ..Config::default()
        };
        assert!(
            bad_mode
                .validate()
                .unwrap_err()
                .to_string()
                .contains("octal")
        );
        let rate: Config = toml::from_str("[profile]\nsample_rate = 1.5").unwrap();
        assert!(
            rate.validate()
                .unwrap_err()
                .to_string()
                .contains("sample_rate")
        );
        let off: Config = toml::from_str("[profile]\nenabled = false").unwrap();
        assert!(!off.profiles("default"));
    }

    #[test]
    fn modes_per_namespace_and_the_older_switches_map_to_modes() {
        let cases = [
            ("", "default", Mode::Learn),
            ("default_mode = \"audit\"", "default", Mode::Audit),
            (
                "namespace_modes = { \"k8s.io\" = \"enforce\" }",
                "k8s.io",
                Mode::Enforce,
            ),
            (
                "namespace_modes = { \"k8s.io\" = \"enforce\" }",
                "default",
                Mode::Learn,
            ),
            (
                "default_mode = \"off\"\nnamespace_modes = { \"k8s.io\" = \"learn\" }",
                "k8s.io",
                Mode::Learn,
            ),
            ("enabled = false", "default", Mode::Off),
            (
                "enabled = false\nnamespace_modes = { \"k8s.io\" = \"learn\" }",
                "k8s.io",
                Mode::Off,
            ),
            ("disabled_namespaces = [\"k8s.io\"]", "k8s.io", Mode::Off),
            ("disabled_namespaces = [\"k8s.io\"]", "default", Mode::Learn),
            (
                "disabled_namespaces = [\"k8s.io\"]\nnamespace_modes = { \"k8s.io\" = \"audit\" }",
                "k8s.io",
                Mode::Off,
            ),
        ];
        for (profile, namespace, want) in cases {
            let config: Config = toml::from_str(&format!("[profile]\n{profile}"))
                .unwrap_or_else(|e| panic!("{profile}: {e}"));
            assert_eq!(config.mode_of(namespace), want, "{profile} in {namespace}");
            assert_eq!(config.profiles(namespace), want != Mode::Off);
        }
        for bad in [
            "default_mode = \"Enforce\"",
            "namespace_modes = { \"x\" = \"watch\" }",
            "default_modes = \"learn\"",
        ] {
            assert!(
                toml::from_str::<Config>(&format!("[profile]\n{bad}")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn view_threads_default_to_the_views_own_default() {
        let config: Config = toml::from_str("[view]\npassthrough = false").unwrap();
        assert_eq!(config.view.threads, pare_fs::view::default_threads());
        assert!((2..=8).contains(&config.view.threads));
    }
}
