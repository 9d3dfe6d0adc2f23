//! Command line.

use super::*;

pub(crate) fn kube_error(error: kube::Error) -> Error {
    Error::backend("kube", error)
}

pub(crate) fn demo_error(message: impl Into<String>) -> Error {
    Error::backend("operator", message.into())
}

pub(crate) fn list(names: &BTreeSet<String>) -> String {
    if names.is_empty() {
        return "none".to_owned();
    }
    names
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) enum Mode {
    Fake,
    Real,
    Kube,
    Manifests(PathBuf),
}

pub(crate) const USAGE: &str =
    "usage: operator [--fake | --real] [--replicas N] | --kube | --manifests <dir>";

pub(crate) fn parse_args(mut args: impl Iterator<Item = String>) -> Result<(Mode, usize), String> {
    let mut mode = Mode::Fake;
    let mut replicas = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--fake" => mode = Mode::Fake,
            "--real" => mode = Mode::Real,
            "--kube" => mode = Mode::Kube,
            "--manifests" => {
                let dir = args.next().ok_or("--manifests needs a directory")?;
                mode = Mode::Manifests(PathBuf::from(dir));
            }
            "--replicas" => {
                let count = args.next().ok_or("--replicas needs a number")?;
                match count.parse::<usize>() {
                    Ok(count @ 1..=16) => replicas = Some(count),
                    _ => return Err(format!("--replicas takes 1 to 16, not {count:?}")),
                }
            }
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    if replicas.is_some() && matches!(mode, Mode::Kube | Mode::Manifests(_)) {
        return Err(
            "--replicas is for --fake and --real; on a cluster, scale the Deployment".into(),
        );
    }
    Ok((mode, replicas.unwrap_or(2)))
}

pub(crate) async fn run(mode: Mode, replicas: usize) -> Result<(), BoxError> {
    match mode {
        Mode::Fake => {
            let cluster = TestCluster::fake().await?;
            demo(&cluster, replicas).await?;
        }
        Mode::Real => {
            // Owned here, so etcd and kube-apiserver stop when the demonstration ends.
            let plane = ControlPlane::start().await?;
            let cluster = TestCluster::from_control_plane(Arc::new(plane));
            demo(&cluster, replicas).await?;
        }
        Mode::Kube => on_cluster().await?,
        Mode::Manifests(dir) => write_manifests(&dir)?,
    }
    Ok(())
}
