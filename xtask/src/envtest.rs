//! `cargo xtask envtest`: provisions `etcd` and `kube-apiserver` for
//! store-kube's real control-plane tests, from Debian's own packages.
//!
//! Upstream envtest downloads release binaries; this machine only reaches
//! Debian's archive, so `kube-apiserver` is built from Debian's `kubernetes`
//! source package (upstream v1.20.2 with `vendor/`) with Debian's Go 1.19.
//! Every step writes its output atomically and is skipped when that output
//! exists, so a second run only prints the directory. Needs root for apt.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Go toolchain Debian bookworm packages and that builds Kubernetes 1.20
/// in GOPATH mode.
const GO_BIN: &str = "/usr/lib/go-1.19/bin";

/// Packages needed to build `kube-apiserver` from source.
const BUILD_PACKAGES: &[&str] = &[
    "golang-1.19-go",
    "make",
    "rsync",
    "jq",
    "dpkg-dev",
    // Kubernetes 1.20 vendors reflect2 1.0.1 and json-iterator 1.1.10, which
    // crash under Go 1.18+ the first time a custom resource is stored; these
    // packages carry the fixed releases (1.0.2 and 1.1.12).
    "golang-github-modern-go-reflect2-dev",
    "golang-github-json-iterator-go-dev",
];

/// Vendored packages replaced by Debian's newer sources: (vendor path, Debian path).
const VENDOR_REPLACEMENTS: &[(&str, &str)] = &[
    (
        "vendor/github.com/modern-go/reflect2",
        "/usr/share/gocode/src/github.com/modern-go/reflect2",
    ),
    (
        "vendor/github.com/json-iterator/go",
        "/usr/share/gocode/src/github.com/json-iterator/go",
    ),
];

/// A file only reflect2 1.0.2 has: proves the replacement already happened.
const REFLECT2_FIXED_MARKER: &str = "vendor/github.com/modern-go/reflect2/go_above_118.go";

/// The temporary apt source giving access to Debian's source packages.
const DEB_SRC_ENTRY: &str = "/etc/apt/sources.list.d/store-kube-envtest-src.sources";

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let mut cache = default_cache_dir()?;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--cache-dir" => {
                let dir = rest.next().ok_or("`--cache-dir` needs a directory")?;
                cache = PathBuf::from(dir);
            }
            "-h" | "--help" => {
                print_help();
                return Ok(());
            }
            other => return Err(format!("envtest: unknown argument `{other}`")),
        }
    }
    let assets = provision(&cache)?;
    eprintln!(
        "xtask: envtest assets ready; run the real-tier tests with\n  \
         export KUBEBUILDER_ASSETS={}",
        assets.display()
    );
    // stdout carries only the value, so `export KUBEBUILDER_ASSETS=$(cargo xtask envtest)` works.
    println!("{}", assets.display());
    Ok(())
}

fn print_help() {
    println!(
        "cargo xtask envtest [--cache-dir DIR]\n\n\
         Provisions etcd and kube-apiserver (v1.20.2, built from Debian's sources) into\n\
         DIR/bin (default $STORE_KUBE_ENVTEST_CACHE, else $XDG_CACHE_HOME/store-kube-envtest,\n\
         else ~/.cache/store-kube-envtest) and prints that directory: the KUBEBUILDER_ASSETS value.\n\
         Needs root (apt-get). A second run reuses everything already built."
    );
}

fn default_cache_dir() -> Result<PathBuf, String> {
    if let Some(dir) = env::var_os("STORE_KUBE_ENVTEST_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("store-kube-envtest"));
    }
    let home = env::var_os("HOME").ok_or("neither XDG_CACHE_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache/store-kube-envtest"))
}

/// Returns the directory holding `etcd` and `kube-apiserver`.
fn provision(cache: &Path) -> Result<PathBuf, String> {
    let bin = cache.join("bin");
    create_dir(&bin)?;
    let mut apt = Apt::default();
    provision_etcd(&bin, &mut apt)?;
    provision_kube_apiserver(cache, &bin, &mut apt)?;
    Ok(bin)
}

fn provision_etcd(bin: &Path, apt: &mut Apt) -> Result<(), String> {
    let target = bin.join("etcd");
    if target.exists() {
        eprintln!("xtask: etcd: cached at {}", target.display());
        return Ok(());
    }
    apt.install(&["etcd-server"])?;
    copy_file_atomically(Path::new("/usr/bin/etcd"), &target)
}

fn provision_kube_apiserver(cache: &Path, bin: &Path, apt: &mut Apt) -> Result<(), String> {
    let target = bin.join("kube-apiserver");
    if target.exists() {
        eprintln!("xtask: kube-apiserver: cached at {}", target.display());
        return Ok(());
    }
    apt.install(BUILD_PACKAGES)?;

    let downloads = cache.join("downloads");
    let dsc = download_kubernetes_source(&downloads, apt)?;

    // GOPATH mode: the tree must sit at $GOPATH/src/k8s.io/kubernetes.
    let gopath = cache.join("gopath");
    let tree = gopath.join("src/k8s.io/kubernetes");
    extract_source(&dsc, &tree)?;
    replace_vendored_packages(&tree)?;

    let go_env = GoEnv::new(cache, &gopath);
    if tree
        .join("pkg/generated/openapi/zz_generated.openapi.go")
        .exists()
    {
        eprintln!("xtask: kube-apiserver: OpenAPI definitions already generated");
    } else {
        let mut make = go_env.command("make");
        make.arg("gen_openapi").current_dir(&tree);
        run_step("make gen_openapi", make)?;
    }

    let partial = bin.join("kube-apiserver.partial");
    let version_pkg = "k8s.io/kubernetes/vendor/k8s.io/component-base/version";
    let ldflags = format!(
        "-s -w -X {version_pkg}.gitVersion=v1.20.2 -X {version_pkg}.gitMajor=1 \
         -X {version_pkg}.gitMinor=20 -X {version_pkg}.gitTreeState=clean"
    );
    let mut build = go_env.command(&format!("{GO_BIN}/go"));
    build
        .args(["build", "-ldflags", &ldflags, "-o"])
        .arg(&partial)
        .arg("./cmd/kube-apiserver")
        .current_dir(&tree);
    eprintln!("xtask: building kube-apiserver (about 4 minutes cold on 2 cores)");
    run_step("go build ./cmd/kube-apiserver", build)?;
    rename(&partial, &target)
}

/// Downloads Debian's `kubernetes` source package; returns its `.dsc` file.
fn download_kubernetes_source(downloads: &Path, apt: &mut Apt) -> Result<PathBuf, String> {
    if let Some(dsc) = find_dsc(downloads)? {
        eprintln!("xtask: kubernetes source: cached at {}", dsc.display());
        return Ok(dsc);
    }
    let partial = downloads.with_extension("partial");
    remove_dir_if_exists(&partial)?;
    create_dir(&partial)?;
    {
        // Removed again on every exit path: the machine's apt setup is not ours to keep.
        let _entry = TemporaryDebSrc::add()?;
        apt.update()?;
        let mut source = Command::new("apt-get");
        source
            .args(["source", "--download-only", "kubernetes"])
            .current_dir(&partial);
        run_step("apt-get source --download-only kubernetes", source)?;
    }
    // Forget the deb-src indexes now that the entry is gone.
    apt.refresh_after_source_removal()?;
    rename(&partial, downloads)?;
    find_dsc(downloads)?.ok_or_else(|| {
        format!(
            "apt-get source left no kubernetes_*.dsc in {}",
            downloads.display()
        )
    })
}

fn find_dsc(dir: &Path) -> Result<Option<PathBuf>, String> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let entries = fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("kubernetes_") && name.ends_with(".dsc") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

fn extract_source(dsc: &Path, tree: &Path) -> Result<(), String> {
    if tree.join("cmd/kube-apiserver").is_dir() {
        eprintln!("xtask: kubernetes source: extracted at {}", tree.display());
        return Ok(());
    }
    let partial = tree.with_extension("partial");
    remove_dir_if_exists(&partial)?;
    if let Some(parent) = partial.parent() {
        create_dir(parent)?;
    }
    // dpkg-source creates the target directory itself and applies Debian's patches.
    let mut extract = Command::new("dpkg-source");
    extract.args(["--no-check", "-x"]).arg(dsc).arg(&partial);
    run_step("dpkg-source -x kubernetes", extract)?;
    rename(&partial, tree)
}

fn replace_vendored_packages(tree: &Path) -> Result<(), String> {
    if tree.join(REFLECT2_FIXED_MARKER).exists() {
        eprintln!("xtask: vendored reflect2 and json-iterator: already replaced");
        return Ok(());
    }
    // json-iterator first: the reflect2 marker is what says both are done.
    for (vendored, debian) in VENDOR_REPLACEMENTS.iter().rev() {
        let target = tree.join(vendored);
        let source = Path::new(debian);
        if !source.is_dir() {
            return Err(format!(
                "{} is missing; is its Debian package installed?",
                source.display()
            ));
        }
        remove_dir_if_exists(&target)?;
        copy_dir(source, &target)?;
        eprintln!("xtask: replaced {vendored} with {debian}");
    }
    Ok(())
}

/// The environment every Go step runs in: GOPATH mode, no cgo, caches inside
/// the envtest cache so a second run is fast and nothing lands in $HOME/go.
struct GoEnv {
    path: String,
    gopath: PathBuf,
    gocache: PathBuf,
}

impl GoEnv {
    fn new(cache: &Path, gopath: &Path) -> Self {
        let path = match env::var("PATH") {
            Ok(path) => format!("{GO_BIN}:{path}"),
            Err(_) => format!("{GO_BIN}:/usr/local/bin:/usr/bin:/bin"),
        };
        Self {
            path,
            gopath: gopath.to_path_buf(),
            gocache: cache.join("go-build"),
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env("PATH", &self.path)
            .env("GOPATH", &self.gopath)
            .env("GOCACHE", &self.gocache)
            // Module mode fails on this tree; GOPATH mode uses vendor/ as is.
            .env("GO111MODULE", "off")
            .env("CGO_ENABLED", "0")
            .env("GOFLAGS", "")
            .env_remove("GOROOT")
            .env_remove("GOBIN");
        command
    }
}

/// Runs apt-get at most once per kind of step in one provisioning run.
#[derive(Default)]
struct Apt {
    updated: bool,
}

impl Apt {
    fn update(&mut self) -> Result<(), String> {
        let mut update = Command::new("apt-get");
        update.arg("update");
        run_step("apt-get update", update)?;
        self.updated = true;
        Ok(())
    }

    fn refresh_after_source_removal(&mut self) -> Result<(), String> {
        self.update()
    }

    fn install(&mut self, packages: &[&str]) -> Result<(), String> {
        let missing: Vec<&str> = packages
            .iter()
            .copied()
            .filter(|package| !is_installed(package))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if !self.updated {
            self.update()?;
        }
        let mut install = Command::new("apt-get");
        install
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive");
        run_step(&format!("apt-get install {}", missing.join(" ")), install)
    }
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|out| {
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok installed")
        })
        .unwrap_or(false)
}

/// A `deb-src` twin of the machine's Debian entries, removed on drop.
struct TemporaryDebSrc;

impl TemporaryDebSrc {
    fn add() -> Result<Self, String> {
        let text = deb_src_entries()?;
        fs::write(DEB_SRC_ENTRY, text)
            .map_err(|e| format!("cannot write {DEB_SRC_ENTRY}: {e} (envtest needs root)"))?;
        eprintln!("xtask: added temporary apt source {DEB_SRC_ENTRY}");
        Ok(Self)
    }
}

impl Drop for TemporaryDebSrc {
    fn drop(&mut self) {
        match fs::remove_file(DEB_SRC_ENTRY) {
            Ok(()) => eprintln!("xtask: removed temporary apt source {DEB_SRC_ENTRY}"),
            Err(e) => eprintln!("xtask: could not remove {DEB_SRC_ENTRY}: {e}; remove it by hand"),
        }
    }
}

/// Copies the machine's deb822 Debian entries (security suites left out:
/// the package lives in the main archive) with `Types: deb-src`.
fn deb_src_entries() -> Result<String, String> {
    let dir = Path::new("/etc/apt/sources.list.d");
    let mut paragraphs = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "sources"))
        .filter(|path| path != Path::new(DEB_SRC_ENTRY))
        .collect();
    files.sort();
    for file in files {
        let text = fs::read_to_string(&file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        for paragraph in text.split("\n\n") {
            let is_debian = paragraph.lines().any(|line| {
                line.starts_with("URIs:") && line.contains("debian") && !line.contains("security")
            });
            let is_binary = paragraph.lines().any(|line| {
                line.starts_with("Types:") && line.split_whitespace().any(|t| t == "deb")
            });
            if !is_debian || !is_binary {
                continue;
            }
            let converted: Vec<String> = paragraph
                .lines()
                .map(|line| {
                    if line.starts_with("Types:") {
                        "Types: deb-src".to_owned()
                    } else {
                        line.to_owned()
                    }
                })
                .collect();
            paragraphs.push(converted.join("\n"));
        }
    }
    if paragraphs.is_empty() {
        return Err(format!(
            "no Debian entry (deb822 `Types: deb` with a debian URI) in {}",
            dir.display()
        ));
    }
    Ok(paragraphs.join("\n\n") + "\n")
}

fn run_step(step: &str, mut command: Command) -> Result<(), String> {
    eprintln!("xtask: == {step}");
    let status = command
        .status()
        .map_err(|e| format!("{step}: could not start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{step} failed ({status})"))
    }
}

fn create_dir(dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

fn remove_dir_if_exists(dir: &Path) -> Result<(), String> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot remove {}: {e}", dir.display())),
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), String> {
    fs::rename(from, to)
        .map_err(|e| format!("cannot move {} to {}: {e}", from.display(), to.display()))
}

fn copy_file_atomically(from: &Path, to: &Path) -> Result<(), String> {
    let partial = to.with_extension("partial");
    fs::copy(from, &partial).map_err(|e| {
        format!(
            "cannot copy {} to {}: {e}",
            from.display(),
            partial.display()
        )
    })?;
    rename(&partial, to)
}

/// Recursive copy following symlinks (Debian's gocode trees may link files).
fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    create_dir(to)?;
    let entries = fs::read_dir(from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", from.display()))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let metadata =
            fs::metadata(&source).map_err(|e| format!("cannot stat {}: {e}", source.display()))?;
        if metadata.is_dir() {
            copy_dir(&source, &target)?;
        } else {
            fs::copy(&source, &target).map_err(|e| {
                format!(
                    "cannot copy {} to {}: {e}",
                    source.display(),
                    target.display()
                )
            })?;
        }
    }
    Ok(())
}
