//! Kubeconfig files for both tiers, so `kubectl --kubeconfig` works against
//! whatever a test started.

use std::path::Path;

use super::error::{Error, Result};

/// What a kubeconfig points at.
pub(crate) struct KubeconfigSpec<'a> {
    pub(crate) name: &'a str,
    pub(crate) server: &'a str,
    pub(crate) certificate_authority: Option<&'a Path>,
    pub(crate) token: &'a str,
}

/// A double-quoted YAML scalar.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub(crate) fn render(spec: &KubeconfigSpec<'_>) -> String {
    let name = quoted(spec.name);
    let authority = spec
        .certificate_authority
        .map(|path| {
            format!(
                "    certificate-authority: {}\n",
                quoted(&path.to_string_lossy())
            )
        })
        // A plain-HTTP server (the fake): there is no certificate to check,
        // and @kubernetes/client-node (Pepr's client) refuses `http://`
        // unless told so.
        .unwrap_or_else(|| {
            if spec.server.starts_with("http://") {
                "    insecure-skip-tls-verify: true\n".to_owned()
            } else {
                String::new()
            }
        });
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: {name}\n  cluster:\n    server: {server}\n{authority}\
         users:\n\
         - name: {name}\n  user:\n    token: {token}\n\
         contexts:\n\
         - name: {name}\n  context:\n    cluster: {name}\n    user: {name}\n    namespace: default\n\
         current-context: {name}\n",
        server = quoted(spec.server),
        token = quoted(spec.token),
    )
}

pub(crate) fn write(path: &Path, spec: &KubeconfigSpec<'_>) -> Result<()> {
    std::fs::write(path, render(spec)).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A kube client configuration read back from a kubeconfig file.
pub(crate) async fn load(path: &Path) -> Result<kube::Config> {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
            path: path.to_path_buf(),
            source,
        })?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|source| Error::Kubeconfig {
            path: path.to_path_buf(),
            source,
        })
}
