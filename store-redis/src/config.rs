//! Where the server is and what a store is called there: URLs, key names, and
//! the typed errors for configuration that cannot work.
//!
//! Credentials never leave this module in text: [`Endpoint`]'s `Debug` and
//! `Display` and every [`ConfigError`] show URLs with the password (and the
//! user name) replaced by `***`.

use std::fmt;

/// A configuration that cannot work; nothing was connected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL does not parse or has a scheme this crate does not know.
    #[error("invalid Redis URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL, credentials redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A `rediss://` URL, but the crate was built without the `tls` feature.
    #[error("`{url}` asks for TLS, but store-redis was built without its `tls` feature")]
    TlsNotBuilt {
        /// The URL, credentials redacted.
        url: String,
    },

    /// A cluster seed list without a single node.
    #[error("a cluster URL needs at least one `host:port`")]
    NoClusterNodes,

    /// The store name or the key prefix cannot be used in a key name.
    #[error("invalid {what} `{value}`: {reason}")]
    InvalidName {
        /// `store name` or `key prefix`.
        what: &'static str,
        /// The rejected name.
        value: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// A limit set to a value that cannot work.
    #[error("invalid setting `{setting}`: {reason}")]
    InvalidSetting {
        /// The builder method.
        setting: &'static str,
        /// What is wrong with the value.
        reason: &'static str,
    },
}

/// The Redis deployment a backend talks to, parsed from a URL.
///
/// - `redis://[user[:password]@]host[:port][/db]`: one server (TLS with
///   `rediss://`).
/// - `redis+cluster://[user[:password]@]host:port[,host:port...]`: a Redis
///   Cluster, given by one or more seed nodes (TLS with `rediss+cluster://`);
///   the rest of the cluster is discovered from them.
/// - A comma-separated list of `redis://` (or `rediss://`) URLs: a cluster
///   seeded by those nodes.
#[derive(Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// One server, as a `redis://` or `rediss://` URL.
    Standalone(String),
    /// Seed nodes of a cluster, each as a `redis://` or `rediss://` URL.
    Cluster(Vec<String>),
}

impl Endpoint {
    /// Parses one of the URL forms above.
    pub fn parse(url: &str) -> Result<Endpoint, ConfigError> {
        let url = url.trim();
        let invalid = |reason: &str| ConfigError::InvalidUrl {
            url: redact(url),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("expected `redis://`, `rediss://` or `redis+cluster://`"))?;
        let endpoint = match scheme {
            "redis+cluster" | "rediss+cluster" => {
                let tls = scheme == "rediss+cluster";
                let (userinfo, hosts) = match rest.rsplit_once('@') {
                    Some((userinfo, hosts)) => (Some(userinfo), hosts),
                    None => (None, rest),
                };
                let (hosts, path) = match hosts.split_once('/') {
                    Some((hosts, path)) => (hosts, Some(path)),
                    None => (hosts, None),
                };
                if path.is_some_and(|p| !p.is_empty() && p != "0") {
                    return Err(invalid("a cluster has only database 0"));
                }
                let seeds: Vec<String> = hosts
                    .split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(|host| {
                        let scheme = if tls { "rediss" } else { "redis" };
                        match userinfo {
                            Some(userinfo) => format!("{scheme}://{userinfo}@{host}"),
                            None => format!("{scheme}://{host}"),
                        }
                    })
                    .collect();
                if seeds.is_empty() {
                    return Err(ConfigError::NoClusterNodes);
                }
                Endpoint::Cluster(seeds)
            }
            "redis" | "rediss" | "unix" | "redis+unix" if !url.contains(',') => {
                Endpoint::Standalone(url.to_owned())
            }
            "redis" | "rediss" => {
                let seeds: Vec<String> = url
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                if seeds.is_empty() {
                    return Err(ConfigError::NoClusterNodes);
                }
                Endpoint::Cluster(seeds)
            }
            _ => return Err(invalid("unknown scheme")),
        };
        for url in endpoint.urls() {
            check_url(url)?;
        }
        Ok(endpoint)
    }

    /// Every URL this endpoint names, credentials included (never log these).
    pub(crate) fn urls(&self) -> &[String] {
        match self {
            Endpoint::Standalone(url) => std::slice::from_ref(url),
            Endpoint::Cluster(urls) => urls,
        }
    }

    /// Whether this is a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Endpoint::Cluster(_))
    }
}

/// Checks that redis-rs takes a URL, without ever showing its credentials.
fn check_url(url: &str) -> Result<(), ConfigError> {
    use redis::IntoConnectionInfo;
    if url.starts_with("rediss://") && !cfg!(feature = "tls") {
        return Err(ConfigError::TlsNotBuilt { url: redact(url) });
    }
    url.into_connection_info()
        .map(|_| ())
        .map_err(|e| ConfigError::InvalidUrl {
            url: redact(url),
            // redis-rs's messages name the part that is wrong, never its text.
            reason: e.to_string().replace(url, &redact(url)),
        })
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Standalone(url) => f.debug_tuple("Standalone").field(&redact(url)).finish(),
            Endpoint::Cluster(urls) => f
                .debug_tuple("Cluster")
                .field(&urls.iter().map(|u| redact(u)).collect::<Vec<_>>())
                .finish(),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Standalone(url) => f.write_str(&redact(url)),
            Endpoint::Cluster(urls) => {
                let shown: Vec<String> = urls.iter().map(|u| redact(u)).collect();
                write!(f, "cluster [{}]", shown.join(", "))
            }
        }
    }
}

/// The URL with anything between `://` and the last `@` of its authority
/// replaced by `***`, so neither a password nor a user name shows.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL we understand: show nothing that could be a secret.
        return if url.contains('@') {
            "<redacted>".to_owned()
        } else {
            url.to_owned()
        };
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{tail}"),
        None => url.to_owned(),
    }
}

/// Checks a store name or key prefix: non-empty, at most 128 bytes, no
/// braces (they would break the hash tag), no whitespace or control characters.
pub(crate) fn check_name(what: &'static str, value: &str) -> Result<(), ConfigError> {
    let invalid = |reason| {
        Err(ConfigError::InvalidName {
            what,
            value: value.to_owned(),
            reason,
        })
    };
    if value.is_empty() {
        return invalid("it is empty");
    }
    if value.len() > 128 {
        return invalid("it is longer than 128 bytes");
    }
    if value.contains(['{', '}']) {
        return invalid("it contains `{` or `}`, which would break the hash tag");
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return invalid("it contains whitespace or control characters");
    }
    Ok(())
}

/// The names of one store's Redis keys, all in one hash slot: `{prefix:store}`.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// The hash tag with its braces, `{prefix:store}`.
    pub(crate) tag: String,
    /// `{tag}:rev`: the store's revision (an integer).
    pub(crate) revision: String,
    /// `{tag}:val`: a hash of key to value.
    pub(crate) values: String,
    /// `{tag}:ver`: a hash of key to version.
    pub(crate) versions: String,
    /// `{tag}:exp`: a sorted set of key by expiry (Unix milliseconds).
    pub(crate) expiry: String,
    /// `{tag}:log`: the change log, a stream with one entry per revision.
    pub(crate) log: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str, store: &str) -> Keys {
        let tag = format!("{{{prefix}:{store}}}");
        Keys {
            revision: format!("{tag}:rev"),
            values: format!("{tag}:val"),
            versions: format!("{tag}:ver"),
            expiry: format!("{tag}:exp"),
            log: format!("{tag}:log"),
            tag,
        }
    }

    /// The key holding a batch's outcome, for retries of that batch.
    pub(crate) fn done(&self, batch_id: &str) -> String {
        format!("{}:done:{batch_id}", self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("redis://user:s3cret@host:6379/2"),
            "redis://***@host:6379/2"
        );
        assert_eq!(redact("redis://:s3cret@host"), "redis://***@host");
        assert_eq!(redact("redis://host:1"), "redis://host:1");
        let endpoint = Endpoint::parse("redis+cluster://u:s3cret@a:1,b:2").expect("parses");
        assert_eq!(
            endpoint,
            Endpoint::Cluster(vec![
                "redis://u:s3cret@a:1".into(),
                "redis://u:s3cret@b:2".into()
            ])
        );
        for shown in [format!("{endpoint}"), format!("{endpoint:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        let error = Endpoint::parse("redis://u:s3cret@host:notaport").expect_err("bad port");
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }

    #[test]
    fn url_forms() {
        assert!(matches!(
            Endpoint::parse("redis://127.0.0.1:6379"),
            Ok(Endpoint::Standalone(_))
        ));
        assert!(matches!(
            Endpoint::parse("redis://a:1,redis://b:2"),
            Ok(Endpoint::Cluster(seeds)) if seeds.len() == 2
        ));
        assert!(matches!(
            Endpoint::parse("http://a"),
            Err(ConfigError::InvalidUrl { .. })
        ));
        assert_eq!(
            Endpoint::parse("redis+cluster://"),
            Err(ConfigError::NoClusterNodes)
        );
    }

    #[test]
    fn names_keep_the_hash_tag_whole() {
        assert!(check_name("store name", "sessions").is_ok());
        assert!(check_name("store name", "a}b").is_err());
        assert!(check_name("key prefix", "").is_err());
        let keys = Keys::new("app", "s");
        assert_eq!(keys.log, "{app:s}:log");
        assert_eq!(keys.done("x"), "{app:s}:done:x");
    }
}
