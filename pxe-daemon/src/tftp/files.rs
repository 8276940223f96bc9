//! The files TFTP serves: names normalised and confined to the boot root, opened with
//! `openat2(RESOLVE_BENEATH)` so that neither `..` nor a symlink can lead out of it, and a bounded
//! in-memory cache of hot files shared by every transfer.
//!
//! The cache is checked on every request against the file just opened: an entry is used only
//! while the file's (device, inode, size, mtime, ctime) are the ones it was read with, so a
//! replaced or rewritten boot file is read again at its next request. Files larger than a
//! quarter of the cache are never cached; they are read block by block through io_uring.

use std::{
    collections::HashMap,
    fs::File,
    io,
    net::SocketAddr,
    os::{fd::OwnedFd, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    sync::Arc,
};

use nix::{
    errno::Errno,
    fcntl::{openat2, OFlag, OpenHow, ResolveFlag},
};
use pxe_common::MacAddr;

use super::{
    packet::{ErrorCode, WireError},
    uring::BlockingReader,
};

/// Longest file name accepted, in bytes (PATH_MAX less the root).
pub const MAX_FILENAME_BYTES: usize = 1024;
/// The largest file the cache holds is its size divided by this.
pub const CACHE_FILE_FRACTION: u64 = 4;

/// Why a file cannot be served. Internal: it may name server paths; the client gets only
/// [`FileError::to_wire`].
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The name climbs out with `..`.
    #[error("{name:?}: `..` is not allowed")]
    DotDot {
        /// The requested name.
        name: String,
    },
    /// A symlink on the way leads out of the root (EXDEV from RESOLVE_BENEATH), or a loop.
    #[error("{name:?}: a symlink leads out of the boot root")]
    SymlinkEscape {
        /// The requested name.
        name: String,
    },
    /// The name is empty after normalisation, too long or has a NUL.
    #[error("{name:?}: not a valid file name")]
    BadName {
        /// The requested name.
        name: String,
    },
    /// No such file.
    #[error("{name:?}: not found")]
    NotFound {
        /// The requested name.
        name: String,
    },
    /// A directory, device or FIFO.
    #[error("{name:?}: not a regular file")]
    NotRegular {
        /// The requested name.
        name: String,
    },
    /// The OS refused to open it (permissions).
    #[error("{name:?}: permission denied")]
    Permission {
        /// The requested name.
        name: String,
    },
    /// Any other I/O failure.
    #[error("reading boot file {path}: {source}")]
    Io {
        /// The path under the root.
        path: String,
        /// What the OS said.
        source: io::Error,
    },
}

impl FileError {
    /// The ERROR sent to the client: 1 for a missing file, 2 for everything refused.
    pub fn to_wire(&self) -> WireError {
        match self {
            FileError::NotFound { .. } => WireError::new(ErrorCode::FileNotFound, "file not found"),
            FileError::Io { .. } => WireError::new(ErrorCode::NotDefined, "cannot read file"),
            FileError::BadName { .. } => {
                WireError::new(ErrorCode::AccessViolation, "invalid file name")
            }
            FileError::DotDot { .. } | FileError::SymlinkEscape { .. } => {
                WireError::new(ErrorCode::AccessViolation, "access outside the boot root")
            }
            FileError::NotRegular { .. } | FileError::Permission { .. } => {
                WireError::new(ErrorCode::AccessViolation, "access violation")
            }
        }
    }

    /// Label value for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            FileError::NotFound { .. } => "not_found",
            FileError::Io { .. } => "read_error",
            _ => "access_violation",
        }
    }
}

/// Rewrites a requested name for a client: the hook through which the boot policy templates
/// per-machine paths (e.g. a per-MAC config file). The default serves names as requested.
pub trait PathMapper: Send + Sync + std::fmt::Debug {
    /// The name to serve for `requested` from `client`.
    fn map(&self, client: SocketAddr, requested: &str) -> String;

    /// The contents of a file the root does not hold but the daemon renders for `client`
    /// (GRUB's per-machine `grub.cfg`); asked only when the file is not found on disk, so an
    /// operator's own file wins. None by default.
    fn render(&self, _client: SocketAddr, _requested: &str) -> Option<Vec<u8>> {
        None
    }
}

/// Renders a machine's GRUB config (its profile, as `/grub?mac=` does over HTTP).
pub type GrubRenderer = Arc<dyn Fn(MacAddr) -> Option<String> + Send + Sync>;

/// The MAC a GRUB config name is for: GRUB's network config search asks for
/// `grub.cfg-01-<mac with hyphens>` (any directory prefix); `None` for other names.
pub fn grub_config_mac(requested: &str) -> Option<MacAddr> {
    let name = requested.rsplit(['/', '\\']).next()?;
    name.strip_prefix("grub.cfg-01-")?.parse().ok()
}

/// Serves every name as requested.
#[derive(Debug, Default)]
pub struct AsRequested;

impl PathMapper for AsRequested {
    fn map(&self, _client: SocketAddr, requested: &str) -> String {
        requested.to_owned()
    }
}

/// Expands `{ip}` and `{ip_hex}` (the client's IPv4 address as pxelinux names its files, e.g.
/// `C612000A`) in a template: what a policy's per-machine path is made of.
pub fn expand_template(template: &str, client: SocketAddr) -> String {
    let ip = client.ip();
    let ip_hex = match ip {
        std::net::IpAddr::V4(v4) => v4.octets().iter().map(|o| format!("{o:02X}")).collect(),
        std::net::IpAddr::V6(_) => String::new(),
    };
    template
        .replace("{ip}", &ip.to_string())
        .replace("{ip_hex}", &ip_hex)
}

/// Placeholders a per-machine name may use.
const REWRITE_VARS: [&str; 5] = ["{ip}", "{ip_hex}", "{mac}", "{mac_hexhyp}", "{group}"];

/// Checks a `[[tftp.rewrite]]` template: only known placeholders, balanced braces.
pub fn check_rewrite_template(template: &str) -> Result<(), String> {
    let mut rest = template.to_owned();
    for v in REWRITE_VARS {
        rest = rest.replace(v, "");
    }
    if rest.contains(['{', '}']) {
        return Err(format!(
            "template {template:?} has a placeholder other than {}",
            REWRITE_VARS.join(", ")
        ));
    }
    Ok(())
}

/// Serves per-machine names where the boot root has them (pxelinux-style per-MAC or per-IP
/// configs): a request for a rule's `file` is served from the rule's expanded `to` if that
/// file exists, else as requested. The MAC comes from the neighbours (the kernel's neighbour
/// table in the daemon), the group from the boot policy.
pub struct PolicyMapper {
    root: std::path::PathBuf,
    rewrites: Vec<(String, String)>,
    policy: std::sync::Arc<crate::boot::BootPolicy>,
    neighbours: std::sync::Arc<dyn crate::timeline::Neighbours>,
    grub: Option<GrubRenderer>,
}

impl std::fmt::Debug for PolicyMapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyMapper")
            .field("root", &self.root)
            .field("rewrites", &self.rewrites)
            .finish_non_exhaustive()
    }
}

impl PolicyMapper {
    /// A mapper over `root` with `rewrites` (requested name, template), finding clients'
    /// MACs in `neighbours`.
    pub fn new(
        root: std::path::PathBuf,
        rewrites: Vec<(String, String)>,
        policy: std::sync::Arc<crate::boot::BootPolicy>,
        neighbours: std::sync::Arc<dyn crate::timeline::Neighbours>,
        grub: Option<GrubRenderer>,
    ) -> PolicyMapper {
        PolicyMapper {
            root,
            rewrites,
            policy,
            neighbours,
            grub,
        }
    }
}

impl PathMapper for PolicyMapper {
    fn map(&self, client: SocketAddr, requested: &str) -> String {
        let wanted = requested.trim_start_matches('/');
        let Some((_, template)) = self.rewrites.iter().find(|(file, _)| file == wanted) else {
            return requested.to_owned();
        };
        let mac = match client.ip() {
            std::net::IpAddr::V4(ip) => self.neighbours.mac_of(ip),
            std::net::IpAddr::V6(_) => None,
        };
        let group = mac.and_then(|mac| {
            let machine = crate::boot::Machine::known_by_mac(mac);
            self.policy.group_of(&machine).map(|g| g.name.clone())
        });
        if template.contains("{mac") && mac.is_none() {
            return requested.to_owned();
        }
        let mac_text = mac.map(|m| m.to_string()).unwrap_or_default();
        let mapped = expand_template(template, client)
            .replace("{mac_hexhyp}", &mac_text.replace(':', "-"))
            .replace("{mac}", &mac_text)
            .replace("{group}", group.as_deref().unwrap_or("default"));
        match normalise(&self.root, &mapped) {
            Ok(p) if !p.absolute_outside && self.root.join(&p.relative).is_file() => p.relative,
            _ => requested.to_owned(),
        }
    }

    /// GRUB's per-MAC config (`grub.cfg-01-<mac>`) and a plain `grub.cfg` (for the client's
    /// MAC from the neighbours), rendered from the machine's profile.
    fn render(&self, client: SocketAddr, requested: &str) -> Option<Vec<u8>> {
        let grub = self.grub.as_ref()?;
        let name = requested.rsplit(['/', '\\']).next()?;
        let mac = match grub_config_mac(requested) {
            Some(mac) => mac,
            None if name == "grub.cfg" => match client.ip() {
                std::net::IpAddr::V4(ip) => self.neighbours.mac_of(ip)?,
                std::net::IpAddr::V6(_) => return None,
            },
            None => return None,
        };
        grub(mac).map(String::into_bytes)
    }
}

/// A requested name made relative to the boot root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootPath {
    /// `a/b/c`: no leading slash, no `.` or `..`, no empty components.
    pub relative: String,
    /// The client sent an absolute name that was not under the root's path: served only if it
    /// exists under the root (as `/undionly.kpxe` means the root's file), else refused.
    pub absolute_outside: bool,
}

/// Normalises `name` against `root`: backslashes become slashes (Windows clients), a leading
/// `root` prefix is dropped, `.` and empty components go, `..` is refused.
pub fn normalise(root: &Path, name: &str) -> Result<RootPath, FileError> {
    let bad = || FileError::BadName {
        name: name.to_owned(),
    };
    if name.len() > MAX_FILENAME_BYTES || name.contains('\0') {
        return Err(bad());
    }
    let name_slashed = name.replace('\\', "/");
    let mut rest = name_slashed.as_str();
    let mut absolute_outside = false;
    if rest.starts_with('/') {
        let root_str = root.to_string_lossy();
        let root_str = root_str.trim_end_matches('/');
        match rest.strip_prefix(root_str) {
            Some(under) if !root_str.is_empty() && (under.is_empty() || under.starts_with('/')) => {
                rest = under;
            }
            _ => absolute_outside = true,
        }
    }
    let mut parts = Vec::new();
    for part in rest.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(FileError::DotDot {
                    name: name.to_owned(),
                })
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(bad());
    }
    Ok(RootPath {
        relative: parts.join("/"),
        absolute_outside,
    })
}

/// What identifies one version of a file: a cache entry is valid while these are unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileVersion {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileVersion {
    fn of(meta: &std::fs::Metadata) -> FileVersion {
        FileVersion {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }
}

/// An opened boot file, ready to serve.
#[derive(Clone, Debug)]
pub enum Source {
    /// The whole file, in the shared cache.
    Cached(Arc<[u8]>),
    /// An open file, read block by block.
    Disk {
        /// The file.
        file: Arc<File>,
        /// Its size when opened.
        size: u64,
    },
}

impl Source {
    /// The file's size.
    pub fn size(&self) -> u64 {
        match self {
            Source::Cached(data) => data.len() as u64,
            Source::Disk { size, .. } => *size,
        }
    }
}

#[derive(Debug)]
struct CacheEntry {
    version: FileVersion,
    data: Arc<[u8]>,
    last_used: u64,
}

/// Cache statistics, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Requests served from memory.
    pub hits: u64,
    /// Requests that read a file into the cache.
    pub fills: u64,
    /// Bytes held.
    pub bytes: u64,
}

/// The boot root and the cache of its hot files.
#[derive(Debug)]
pub struct FileStore {
    root: PathBuf,
    root_fd: OwnedFd,
    cache: HashMap<String, CacheEntry>,
    cache_bytes_max: u64,
    clock: u64,
    stats: CacheStats,
    reader: BlockingReader,
}

impl FileStore {
    /// Opens `root` (an absolute directory) with a cache of at most `cache_bytes_max` bytes.
    pub fn new(root: &Path, cache_bytes_max: u64) -> io::Result<FileStore> {
        let dir = File::open(root)?;
        if !dir.metadata()?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("boot root {} is not a directory", root.display()),
            ));
        }
        Ok(FileStore {
            root: root.to_path_buf(),
            root_fd: dir.into(),
            cache: HashMap::new(),
            cache_bytes_max,
            clock: 0,
            stats: CacheStats::default(),
            reader: BlockingReader::new()?,
        })
    }

    /// The boot root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Cache statistics so far.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Resolves `name` under the root and opens it: from the cache when the file is unchanged,
    /// else read into the cache (through io_uring) when it is small enough, else open for
    /// block reads.
    pub fn open(&mut self, name: &str) -> Result<Source, FileError> {
        // An absolute name is looked up beneath the root like any other (`/grub/grub.cfg`
        // means the root's file): one that is not there gets ERROR 1, as RFC 1350 wants and as
        // GRUB's config search expects, not an access violation; nothing outside is ever read.
        let path = normalise(&self.root, name)?;
        let file = self.open_beneath(&path.relative, name)?;
        let io_err = |source| FileError::Io {
            path: path.relative.clone(),
            source,
        };
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(FileError::NotRegular {
                name: name.to_owned(),
            });
        }
        let version = FileVersion::of(&meta);
        self.clock += 1;
        if let Some(entry) = self.cache.get_mut(&path.relative) {
            if entry.version == version {
                entry.last_used = self.clock;
                self.stats.hits += 1;
                return Ok(Source::Cached(entry.data.clone()));
            }
            // Changed since it was read: drop the old copy (transfers using it keep theirs).
            let old = self
                .cache
                .remove(&path.relative)
                .map_or(0, |e| e.data.len());
            self.stats.bytes -= old as u64;
        }
        if version.size > self.cache_bytes_max / CACHE_FILE_FRACTION {
            return Ok(Source::Disk {
                file: Arc::new(file),
                size: version.size,
            });
        }
        let mut data = vec![
            0u8;
            usize::try_from(version.size)
                .map_err(|_| io_err(io::ErrorKind::FileTooLarge.into()))?
        ];
        self.reader
            .read_exact_at(&file, &mut data, 0)
            .map_err(io_err)?;
        let data: Arc<[u8]> = data.into();
        self.make_room(version.size);
        self.stats.fills += 1;
        self.stats.bytes += version.size;
        self.cache.insert(
            path.relative,
            CacheEntry {
                version,
                data: data.clone(),
                last_used: self.clock,
            },
        );
        Ok(Source::Cached(data))
    }

    /// Evicts the least recently used entries until `incoming` more bytes fit.
    fn make_room(&mut self, incoming: u64) {
        while self.stats.bytes + incoming > self.cache_bytes_max {
            let Some(oldest) = self
                .cache
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = self.cache.remove(&oldest) {
                self.stats.bytes -= e.data.len() as u64;
            }
        }
    }

    /// `openat2(root, relative, O_RDONLY, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`.
    fn open_beneath(&self, relative: &str, name: &str) -> Result<File, FileError> {
        if relative.contains('\0') {
            return Err(FileError::BadName {
                name: name.to_owned(),
            });
        }
        // O_NONBLOCK: opening a FIFO must not block the server; no effect on regular files.
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        match openat2(&self.root_fd, relative, how) {
            Ok(fd) => Ok(File::from(fd)),
            Err(errno) => {
                let name = name.to_owned();
                Err(match errno {
                    Errno::ENOENT | Errno::ENOTDIR => FileError::NotFound { name },
                    Errno::EXDEV | Errno::ELOOP => FileError::SymlinkEscape { name },
                    Errno::EACCES | Errno::EPERM => FileError::Permission { name },
                    Errno::ENAMETOOLONG => FileError::BadName { name },
                    _ => FileError::Io {
                        path: relative.to_owned(),
                        source: errno.into(),
                    },
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn store(cache: u64) -> (tempfile::TempDir, FileStore) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("ipxe.efi"), b"EFI binary").unwrap();
        std::fs::write(root.join("sub/file"), b"in sub").unwrap();
        std::fs::write(dir.path().join("secret"), b"outside").unwrap();
        let root = root.canonicalize().unwrap();
        let s = FileStore::new(&root, cache).unwrap();
        (dir, s)
    }

    fn bytes(src: &Source) -> Vec<u8> {
        match src {
            Source::Cached(d) => d.to_vec(),
            Source::Disk { file, size } => {
                let mut buf = vec![0; *size as usize];
                std::os::unix::fs::FileExt::read_exact_at(&**file, &mut buf, 0).unwrap();
                buf
            }
        }
    }

    #[test]
    fn grub_config_names_name_the_machine() {
        let mac = MacAddr([0x52, 0x54, 0, 0xa6, 0, 1]);
        assert_eq!(
            grub_config_mac("/grub/grub.cfg-01-52-54-00-a6-00-01"),
            Some(mac)
        );
        assert_eq!(grub_config_mac("grub.cfg-01-52-54-00-a6-00-01"), Some(mac));
        assert_eq!(grub_config_mac("/grub/grub.cfg-C612"), None);
        assert_eq!(grub_config_mac("/grub/grub.cfg"), None);
        assert_eq!(grub_config_mac("grub.cfg-01-52-54-00"), None);
    }

    #[test]
    fn names_are_normalised() {
        let root = Path::new("/srv/pxe");
        let rel = |n: &str| normalise(root, n).map(|p| (p.relative, p.absolute_outside));
        assert_eq!(rel("ipxe.efi").unwrap(), ("ipxe.efi".into(), false));
        assert_eq!(rel("/ipxe.efi").unwrap(), ("ipxe.efi".into(), true));
        assert_eq!(rel("/srv/pxe/a//./b").unwrap(), ("a/b".into(), false));
        assert_eq!(rel("\\boot\\bcd").unwrap(), ("boot/bcd".into(), true));
        assert_eq!(rel("/srv/pxefoo").unwrap(), ("srv/pxefoo".into(), true));
        assert!(matches!(
            rel("../etc/passwd"),
            Err(FileError::DotDot { .. })
        ));
        assert!(matches!(rel("a/../../b"), Err(FileError::DotDot { .. })));
        assert!(matches!(rel("..\\x"), Err(FileError::DotDot { .. })));
        assert!(matches!(rel("/"), Err(FileError::BadName { .. })));
        assert!(matches!(rel("./"), Err(FileError::BadName { .. })));
    }

    #[test]
    fn serves_files_under_the_root_and_refuses_escapes() {
        let (dir, mut s) = store(1 << 20);
        let root = s.root().to_path_buf();
        assert_eq!(bytes(&s.open("ipxe.efi").unwrap()), b"EFI binary");
        assert_eq!(bytes(&s.open("/ipxe.efi").unwrap()), b"EFI binary");
        let abs = format!("{}/sub/file", root.display());
        assert_eq!(bytes(&s.open(&abs).unwrap()), b"in sub");

        symlink(dir.path().join("secret"), root.join("abs-link")).unwrap();
        symlink("../secret", root.join("rel-link")).unwrap();
        symlink("sub/file", root.join("inside-link")).unwrap();
        assert_eq!(bytes(&s.open("inside-link").unwrap()), b"in sub");

        let mut code = |name: &str| s.open(name).map(|_| ()).unwrap_err().to_wire().code;
        let secret = format!("{}/secret", dir.path().display());
        assert_eq!(code("abs-link"), ErrorCode::AccessViolation);
        assert_eq!(code("rel-link"), ErrorCode::AccessViolation);
        assert_eq!(code("../secret"), ErrorCode::AccessViolation);
        assert_eq!(code("sub/../../secret"), ErrorCode::AccessViolation);
        // Absolute names are names under the root (nothing outside is read): one that is not
        // there, such as a file outside the root or GRUB's per-MAC config, is just missing.
        assert_eq!(code(&secret), ErrorCode::FileNotFound);
        assert_eq!(code("/etc/passwd"), ErrorCode::FileNotFound);
        assert_eq!(
            code("/grub/grub.cfg-01-52-54-00-a6-00-01"),
            ErrorCode::FileNotFound
        );
        assert_eq!(code("missing.efi"), ErrorCode::FileNotFound);
        assert_eq!(code("sub"), ErrorCode::AccessViolation);
        assert_eq!(code("ipxe.efi/x"), ErrorCode::FileNotFound);
    }

    #[test]
    fn cache_is_shared_and_invalidated_when_the_file_changes() {
        let (_dir, mut s) = store(1 << 20);
        let a = s.open("ipxe.efi").unwrap();
        let b = s.open("ipxe.efi").unwrap();
        let (Source::Cached(a), Source::Cached(b)) = (&a, &b) else {
            panic!("small files are cached")
        };
        assert!(Arc::ptr_eq(a, b), "one copy for every transfer");
        assert_eq!(s.stats().fills, 1);
        assert_eq!(s.stats().hits, 1);

        // Rewritten in place (same inode, new size and mtime) and replaced by rename.
        std::fs::write(s.root().join("ipxe.efi"), b"new EFI binary").unwrap();
        assert_eq!(bytes(&s.open("ipxe.efi").unwrap()), b"new EFI binary");
        let tmp = s.root().join("tmp");
        std::fs::write(&tmp, b"renamed one").unwrap();
        std::fs::rename(&tmp, s.root().join("ipxe.efi")).unwrap();
        assert_eq!(bytes(&s.open("ipxe.efi").unwrap()), b"renamed one");
        assert_eq!(s.stats().fills, 3);
        assert_eq!(s.stats().bytes, 11);
        // The first transfer's copy is untouched.
        assert_eq!(&a[..], b"EFI binary");
    }

    #[test]
    fn cache_is_bounded() {
        let (_dir, mut s) = store(4000);
        for i in 0..10 {
            std::fs::write(s.root().join(format!("f{i}")), vec![i as u8; 900]).unwrap();
        }
        for i in 0..10 {
            let src = s.open(&format!("f{i}")).unwrap();
            assert!(matches!(src, Source::Cached(_)));
            assert_eq!(bytes(&src), vec![i as u8; 900]);
            assert!(s.stats().bytes <= 4000, "{:?}", s.stats());
        }
        // Above a quarter of the cache: read from disk, not cached.
        std::fs::write(s.root().join("big"), vec![7u8; 1001]).unwrap();
        let src = s.open("big").unwrap();
        assert!(matches!(src, Source::Disk { size: 1001, .. }));
        assert_eq!(bytes(&src), vec![7u8; 1001]);
    }

    #[test]
    fn templates_name_per_machine_files() {
        let client: SocketAddr = "198.18.0.10:1234".parse().unwrap();
        assert_eq!(
            expand_template("pxelinux.cfg/{ip_hex}", client),
            "pxelinux.cfg/C612000A"
        );
        assert_eq!(
            expand_template("hosts/{ip}/boot.ipxe", client),
            "hosts/198.18.0.10/boot.ipxe"
        );
        assert_eq!(AsRequested.map(client, "x"), "x");
    }
}
