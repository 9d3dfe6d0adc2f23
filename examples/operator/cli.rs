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
    Certificates(PathBuf),
    BenchAdmission,
}

/// The serving certificate's files: `--tls-dir` holding `tls.crt`, `tls.key`
/// and `ca.crt` (a mounted `kubernetes.io/tls` Secret, or what
/// `--certificates` wrote).
pub(crate) struct Args {
    pub(crate) mode: Mode,
    pub(crate) replicas: usize,
    pub(crate) failure_policy: FailurePolicy,
    pub(crate) tls_dir: Option<PathBuf>,
    pub(crate) listen: SocketAddr,
}

pub(crate) const USAGE: &str = "usage: operator [--fake | --real] [--replicas N] \
     | --kube [--listen ADDR] [--tls-dir DIR] \
     | --manifests <dir> [--tls-dir DIR] [--failure-policy Fail|Ignore] \
     | --certificates <dir> | --bench-admission";

pub(crate) fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut mode = Mode::Fake;
    let mut replicas = None;
    let mut failure_policy = FailurePolicy::Fail;
    let mut tls_dir = None;
    let mut listen = SocketAddr::from(([0, 0, 0, 0], WEBHOOK_PORT));
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--fake" => mode = Mode::Fake,
            "--real" => mode = Mode::Real,
            "--kube" => mode = Mode::Kube,
            "--bench-admission" => mode = Mode::BenchAdmission,
            "--manifests" => {
                let dir = args.next().ok_or("--manifests needs a directory")?;
                mode = Mode::Manifests(PathBuf::from(dir));
            }
            "--certificates" => {
                let dir = args.next().ok_or("--certificates needs a directory")?;
                mode = Mode::Certificates(PathBuf::from(dir));
            }
            "--tls-dir" => {
                let dir = args.next().ok_or("--tls-dir needs a directory")?;
                tls_dir = Some(PathBuf::from(dir));
            }
            "--failure-policy" => {
                let policy = args.next().ok_or("--failure-policy needs Fail or Ignore")?;
                failure_policy = FailurePolicy::parse(&policy)?;
            }
            "--listen" => {
                let address = args.next().ok_or("--listen needs an address")?;
                listen = address.parse().map_err(|_| {
                    format!("--listen takes an address as 0.0.0.0:8443, not {address:?}")
                })?;
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
    if replicas.is_some() && !matches!(mode, Mode::Fake | Mode::Real) {
        return Err(
            "--replicas is for --fake and --real; on a cluster, scale the Deployment".into(),
        );
    }
    Ok(Args {
        mode,
        replicas: replicas.unwrap_or(2),
        failure_policy,
        tls_dir,
        listen,
    })
}

pub(crate) async fn run(args: Args) -> Result<(), BoxError> {
    // Before any store starts, so every figure recorded through the
    // `metrics` facade (the webhook's and the library crates') reaches /metrics.
    let _ = prometheus();
    let replicas = args.replicas;
    match args.mode {
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
        Mode::Kube => on_cluster(args.listen, args.tls_dir.as_deref()).await?,
        Mode::Manifests(dir) => {
            let ca = match &args.tls_dir {
                Some(tls) => Some(std::fs::read_to_string(tls.join("ca.crt"))?),
                None => None,
            };
            write_manifests(&dir, ca.as_deref(), args.failure_policy)?;
        }
        Mode::Certificates(dir) => {
            Certificates::generate(&service_names())?.write(&dir)?;
            println!(
                "wrote ca.crt, tls.crt and tls.key for {} to {}",
                service_names().join(", "),
                dir.display()
            );
        }
        Mode::BenchAdmission => bench_admission().await?,
    }
    Ok(())
}

/// The names kube-apiserver uses for the operator's Service.
pub(crate) fn service_names() -> Vec<String> {
    vec![
        format!("{NAME}.{NAME}.svc"),
        format!("{NAME}.{NAME}.svc.cluster.local"),
    ]
}
