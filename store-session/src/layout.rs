//! Where the durable tier keeps a session's keys on the inner backend.
//!
//! ```text
//! <root>m/<session>                          the session's current generation,
//!                                            followed by every replica
//! <root>m/<session>/used                     a replica used the session lately
//!                                            (idle expiry): [generation, clock]
//! <root>s/<session>/<generation>/g/<key>     global scope
//! <root>s/<session>/<generation>/r/<realm>/<key>
//! <root>s/<session>/<generation>/l/<env>/<key>            local, no realm
//! <root>s/<session>/<generation>/lr/<realm>/<env>/<key>   local in a realm
//! ```
//!
//! Every name segment is escaped RFC 6901 style (`~` as `~0`, `/` as `~1`), so
//! an escaped segment never holds a `/` and no session's prefix is a prefix of
//! another's: `s/a/` and `s/a~1b/` part at the fourth byte. The user's key is
//! the unescaped tail. Ending a session lists only `<root>s/<session>/`.

use std::borrow::Cow;
use std::fmt;

use crate::error::{Error, Result};

/// Which part of a session a scope covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScopeKind {
    /// The whole session.
    Global,
    /// One realm of the session.
    Realm(String),
    /// One target environment, optionally inside a realm.
    Local {
        /// The realm, if the environment belongs to one.
        realm: Option<String>,
        /// The target environment.
        env: String,
    },
}

impl fmt::Display for ScopeKind {
    /// `global`, `realm/<realm>`, `local/<env>` or `local/<realm>/<env>`, names escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeKind::Global => f.write_str("global"),
            ScopeKind::Realm(realm) => write!(f, "realm/{}", escape(realm)),
            ScopeKind::Local { realm: None, env } => write!(f, "local/{}", escape(env)),
            ScopeKind::Local {
                realm: Some(realm),
                env,
            } => write!(f, "local/{}/{}", escape(realm), escape(env)),
        }
    }
}

/// Escapes one name segment: `~` becomes `~0`, `/` becomes `~1`.
pub fn escape(segment: &str) -> Cow<'_, str> {
    if segment.contains(['~', '/']) {
        Cow::Owned(segment.replace('~', "~0").replace('/', "~1"))
    } else {
        Cow::Borrowed(segment)
    }
}

/// Undoes [`escape`].
pub(crate) fn unescape(segment: &str) -> Cow<'_, str> {
    if segment.contains('~') {
        Cow::Owned(segment.replace("~1", "/").replace("~0", "~"))
    } else {
        Cow::Borrowed(segment)
    }
}

/// The prefix of every session's generation record.
pub(crate) fn meta_prefix(root: &str) -> String {
    format!("{root}m/")
}

/// Checks a session id, realm or environment name: non-empty, no control character.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<()> {
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(Error::InvalidName {
            what,
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// The key holding a session's current generation.
pub fn meta_key(root: &str, session: &str) -> String {
    format!("{root}m/{}", escape(session))
}

/// The key a replica writes now and then while it uses a session, so the
/// other replicas' idle expiry counts those uses too. Under the records'
/// prefix, where no record is: an escaped session id holds no `/`.
pub fn use_key(root: &str, session: &str) -> String {
    format!("{}/used", meta_key(root, session))
}

/// The keys beside a session's prefix that ending it removes: its record and
/// its use mark.
pub(crate) fn session_records(root: &str, session: &str) -> Vec<String> {
    vec![meta_key(root, session), use_key(root, session)]
}

/// What a key under [`meta_prefix`] names, with the prefix taken off: a
/// session's generation record, or its use mark. Session ids come back unescaped.
pub(crate) enum MetaKey<'a> {
    Record(Cow<'a, str>),
    Used(Cow<'a, str>),
}

pub(crate) fn meta_key_of(tail: &str) -> Option<MetaKey<'_>> {
    match tail.split_once('/') {
        None => Some(MetaKey::Record(unescape(tail))),
        Some((id, "used")) => Some(MetaKey::Used(unescape(id))),
        Some(_) => None,
    }
}

/// The prefix of everything a session holds, whatever its generation.
pub fn session_prefix(root: &str, session: &str) -> String {
    format!("{root}s/{}/", escape(session))
}

/// The prefix of one generation (one instance, see `Session::reset`) of a session.
pub fn generation_prefix(root: &str, session: &str, generation: u64) -> String {
    format!("{}{generation}/", session_prefix(root, session))
}

/// The prefix of one scope of one generation of a session.
pub fn scope_prefix(root: &str, session: &str, generation: u64, scope: &ScopeKind) -> String {
    let base = generation_prefix(root, session, generation);
    match scope {
        ScopeKind::Global => format!("{base}g/"),
        ScopeKind::Realm(realm) => format!("{base}r/{}/", escape(realm)),
        ScopeKind::Local { realm: None, env } => format!("{base}l/{}/", escape(env)),
        ScopeKind::Local {
            realm: Some(realm),
            env,
        } => format!("{base}lr/{}/{}/", escape(realm), escape(env)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_names_never_hold_a_slash_and_round_trip_distinctly() {
        assert_eq!(escape("a/b~c"), "a~1b~0c");
        for name in ["a/b~c", "~1", "~0/", "plain", "~~//"] {
            assert_eq!(unescape(&escape(name)), name);
        }
        assert_eq!(escape("plain"), "plain");
        assert_ne!(escape("a/b"), escape("a~1b"));
    }

    #[test]
    fn no_session_prefix_is_a_prefix_of_another_sessions_prefix() {
        let names = ["a", "a/b", "a~1b", "ab", "a~", "~", "/"];
        for x in names {
            for y in names {
                if x != y {
                    let (px, py) = (session_prefix("", x), session_prefix("", y));
                    assert!(!py.starts_with(&px), "{px} is a prefix of {py}");
                }
            }
        }
    }

    #[test]
    fn no_scope_prefix_is_a_prefix_of_another_scope_prefix() {
        let scopes = [
            ScopeKind::Global,
            ScopeKind::Realm("g".into()),
            ScopeKind::Realm("x/y".into()),
            ScopeKind::Realm("x".into()),
            ScopeKind::Local {
                realm: None,
                env: "x".into(),
            },
            ScopeKind::Local {
                realm: Some("x".into()),
                env: "y".into(),
            },
            ScopeKind::Local {
                realm: None,
                env: "x/y".into(),
            },
        ];
        for x in &scopes {
            for y in &scopes {
                if x != y {
                    let (px, py) = (scope_prefix("", "s", 0, x), scope_prefix("", "s", 0, y));
                    assert!(!py.starts_with(&px), "{px} is a prefix of {py}");
                }
            }
        }
        assert!(
            !scope_prefix("", "s", 1, &ScopeKind::Global)
                .starts_with(&generation_prefix("", "s", 10))
        );
        assert!(!generation_prefix("", "s", 10).starts_with(&generation_prefix("", "s", 1)));
    }

    #[test]
    fn empty_and_control_names_are_rejected() {
        assert!(check_name("session", "").is_err());
        assert!(check_name("realm", "a\nb").is_err());
        assert!(check_name("environment", "ok / fine ~").is_ok());
    }
}
