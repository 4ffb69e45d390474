//! The landed dir: a local folder or an `s3://bucket/prefix`, read through
//! object_store, never written.
//!
//! Listing refuses names a file system or SQL log should never see (path
//! separators, `..`, control characters) and symlinks that leave the landed dir.
//! Files may sit in acquisition-date folders (`landed_dir/YYYY-MM-DD/`), or in
//! the window folders of the monitoring layout
//! (`agency/<slug>/files/<file name>/<YYYY-MM-DD>/<HH>/`, see [`WindowKey`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};

use crate::exit::Exit;

/// Why the landed dir or a file in it could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LandedError {
    #[error("landed dir {dir} does not exist or is not a folder")]
    Missing { dir: String },
    #[error(
        "cannot open the S3 landed dir {url} (S3_ENDPOINT, S3_REGION, S3_ACCESS_KEY, S3_SECRET_KEY configure it)"
    )]
    S3Config {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("cannot list {dir}{}", s3_hint(source))]
    List {
        dir: String,
        #[source]
        source: object_store::Error,
    },
    #[error("cannot list {dir}")]
    ListLocal {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {uri}")]
    Read {
        uri: String,
        #[source]
        source: object_store::Error,
    },
    #[error("--acq-date `{0}` is not a date (YYYY-MM-DD)")]
    BadAcqDate(String),
    #[error("there is no acquisition folder {date}/ in {dir} (folders: {found})")]
    NoAcqFolder {
        date: String,
        dir: String,
        found: String,
    },
    #[error(
        "{path} is not inside the landed dir {dir} (or one of its YYYY-MM-DD or agency/<slug>/files/<name>/<YYYY-MM-DD>/<HH> folders)"
    )]
    Outside { path: String, dir: String },
    #[error("{uri} does not exist")]
    NotFound { uri: String },
    #[error("{uri} is {what}, not a file")]
    NotAFile { uri: String, what: &'static str },
    #[error("--file-path is empty: name a landed file (or use --all)")]
    EmptyPath,
}

impl LandedError {
    pub fn exit(&self) -> Exit {
        match self {
            LandedError::BadAcqDate(_)
            | LandedError::NoAcqFolder { .. }
            | LandedError::NotFound { .. }
            | LandedError::NotAFile { .. }
            | LandedError::EmptyPath => Exit::Usage,
            LandedError::Outside { .. } => Exit::Rejected,
            _ => Exit::Failure,
        }
    }
}

/// One S3 listing, from object_store or from the raw lister.
struct S3Listing {
    objects: Vec<S3Object>,
    /// Folder keys, ending in `/`.
    prefixes: Vec<String>,
}

struct S3Object {
    key: String,
    /// None when object_store cannot represent the key.
    location: Option<ObjPath>,
    size: u64,
    modified: DateTime<Utc>,
}

impl From<object_store::ObjectMeta> for S3Object {
    fn from(meta: object_store::ObjectMeta) -> Self {
        S3Object {
            key: meta.location.to_string(),
            location: Some(meta.location),
            size: meta.size,
            modified: meta.last_modified,
        }
    }
}

/// A readable file in the landed dir.
#[derive(Debug, Clone)]
pub struct LandedFile {
    /// Location inside the store.
    pub location: ObjPath,
    pub name: String,
    /// `file:///abs/path` or `s3://bucket/key`.
    pub uri: String,
    pub size: u64,
    pub modified: Option<DateTime<Utc>>,
    /// Set when the file sits in a window folder of the monitoring layout.
    pub window: Option<WindowKey>,
    /// Set when the file sits in an acquisition-date folder (`YYYY-MM-DD`).
    pub acq_date: Option<String>,
}

/// A folder of the monitoring layout the data-quality seed describes,
/// `agency/<slug>/files/<file name>/<YYYY-MM-DD>/<HH>`: it names the dataset
/// (by its name and `agency_slug`) and the hour the object belongs to, so the
/// object's own name (`data.csv`) need not carry either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowKey {
    pub agency: String,
    pub file_name: String,
    /// The window's first instant (`run_date`, `run_hour` of the monitoring run).
    pub window: NaiveDateTime,
}

impl WindowKey {
    /// The folder part (`agency/a/files/x/2026-01-04/12`, no trailing `/`), or
    /// None when it is not one.
    pub fn parse(folder: &str) -> Option<WindowKey> {
        let parts: Vec<&str> = folder.split('/').collect();
        let ["agency", agency, "files", file_name, date, hour] = parts.as_slice() else {
            return None;
        };
        if check_name(agency).is_err() || check_name(file_name).is_err() || !is_date_folder(date) {
            return None;
        }
        let hour: u32 = (hour.len() == 2 && hour.bytes().all(|b| b.is_ascii_digit()))
            .then(|| hour.parse().ok())
            .flatten()?;
        let window = NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .ok()?
            .and_hms_opt(hour, 0, 0)?;
        Some(WindowKey {
            agency: (*agency).to_owned(),
            file_name: (*file_name).to_owned(),
            window,
        })
    }
}

/// A folder a landed file may sit in: an acquisition date or a monitoring window.
fn is_file_folder(folder: &str) -> bool {
    is_date_folder(folder) || WindowKey::parse(folder).is_some()
}

/// One listed name: a file to examine, or one refused without being read.
#[derive(Debug, Clone)]
pub enum Entry {
    File(LandedFile),
    Refused {
        name: String,
        uri: String,
        reason: String,
    },
}

/// The landed dir, opened.
#[derive(Clone)]
pub struct Landed {
    store: Arc<dyn ObjectStore>,
    /// S3 only: the listing that tolerates keys object_store refuses.
    raw: Option<Arc<crate::s3::RawLister>>,
    /// Key prefix inside the store (S3); None for a local folder (store is rooted there).
    prefix: Option<ObjPath>,
    /// `/abs/path` or `s3://bucket/prefix`, for messages.
    pub display: String,
    /// Canonical local root; None for S3.
    local_root: Option<PathBuf>,
    /// When remembered ([`Landed::remembering_digests`]): the sha256 of each
    /// file this command has read, by name, size and time.
    digests: Option<Arc<std::sync::Mutex<HashMap<DigestKey, String>>>>,
}

type DigestKey = (String, u64, Option<DateTime<Utc>>);

/// A file name is safe when it is one plain path segment of printable characters.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the file name is empty".into());
    }
    // `..` is only a way up as a whole path segment; separators are refused
    // next, so `n_2030-08...csv` is a plain name.
    if name == "." || name == ".." {
        return Err(format!(
            "the file name {name:?} is `.` or `..`, a directory reference"
        ));
    }
    if name.contains(['/', '\\']) {
        return Err(format!("the file name {name:?} contains a path separator"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!(
            "the file name {name:?} contains control characters"
        ));
    }
    if name.len() > 255 {
        return Err("the file name is longer than 255 bytes".into());
    }
    Ok(())
}

fn is_date_folder(name: &str) -> bool {
    name.len() == 10 && NaiveDate::parse_from_str(name, "%Y-%m-%d").is_ok()
}

impl Landed {
    /// Opens `dir` (already resolved against the config's folder).
    pub fn open(dir: &str) -> Result<Landed, LandedError> {
        if let Some(rest) = dir.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let prefix = prefix.trim_matches('/');
            let (store, raw) =
                crate::s3::open_bucket(bucket).map_err(|source| LandedError::S3Config {
                    url: dir.to_owned(),
                    source,
                })?;
            return Ok(Landed {
                store,
                raw: Some(Arc::new(raw)),
                prefix: (!prefix.is_empty())
                    .then(|| ObjPath::parse(prefix).unwrap_or_else(|_| ObjPath::from(prefix))),
                display: format!(
                    "s3://{bucket}{}",
                    if prefix.is_empty() {
                        String::new()
                    } else {
                        format!("/{prefix}")
                    }
                ),
                local_root: None,
                digests: None,
            });
        }
        let path = dir.strip_prefix("file://").unwrap_or(dir);
        let root = std::fs::canonicalize(path)
            .ok()
            .filter(|p| p.is_dir())
            .ok_or_else(|| LandedError::Missing {
                dir: dir.to_owned(),
            })?;
        let store =
            LocalFileSystem::new_with_prefix(&root).map_err(|source| LandedError::List {
                dir: dir.to_owned(),
                source,
            })?;
        Ok(Landed {
            store: Arc::new(store),
            raw: None,
            prefix: None,
            display: root.display().to_string(),
            local_root: Some(root),
            digests: None,
        })
    }

    /// This landed dir, remembering each file's sha256 once read: a `run`
    /// decides each period again before each step, and a file it has read,
    /// with the same name, size and time, is not read again for the same
    /// answer. Ingest's own read (with its UTF-8 check) always reads. Not for
    /// a command that lives long (`events`): there a file may be written again
    /// with the same size and time, a new version the digest must find.
    pub fn remembering_digests(mut self) -> Landed {
        self.digests = Some(Arc::default());
        self
    }

    /// Where an S3 event's object is, as a path [`Landed::resolve`] takes
    /// (relative to the landed prefix); Err says why it is not in this landed dir.
    pub fn key_in(&self, bucket: &str, key: &str) -> Result<String, String> {
        let Some(rest) = self
            .display
            .strip_prefix("s3://")
            .filter(|_| self.local_root.is_none())
        else {
            return Err(format!(
                "the landed dir {} is a local folder, not an S3 bucket",
                self.display
            ));
        };
        let ours = rest.split_once('/').map_or(rest, |(b, _)| b);
        if bucket != ours {
            return Err(format!(
                "bucket {bucket:?} is not the landed dir's bucket {ours:?}"
            ));
        }
        match &self.prefix {
            None => Ok(key.to_owned()),
            Some(prefix) => key
                .strip_prefix(prefix.as_ref())
                .and_then(|k| k.strip_prefix('/'))
                .map(str::to_owned)
                .ok_or_else(|| format!("key {key:?} is not under the landed prefix {prefix}/")),
        }
    }

    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The store's location of a file. Names are used as they are: `ObjPath::from`
    /// would percent-encode `é`, `#` or `%`, naming another object.
    fn location(&self, folder: Option<&str>, name: &str) -> ObjPath {
        let mut parts: Vec<String> = self
            .prefix
            .iter()
            .flat_map(|p| p.parts().map(|x| x.as_ref().to_owned()))
            .collect();
        parts.extend(folder.map(str::to_owned));
        parts.push(name.to_owned());
        // Names were checked (no separators, `..` or control characters), so this parses.
        ObjPath::parse(parts.join("/")).unwrap_or_else(|_| ObjPath::from_iter(parts))
    }

    fn uri(&self, folder: Option<&str>, name: &str) -> String {
        let rel = match folder {
            Some(f) => format!("{f}/{name}"),
            None => name.to_owned(),
        };
        match &self.local_root {
            Some(root) => format!("file://{}", root.join(rel).display()),
            None => format!("{}/{rel}", self.display),
        }
    }

    /// The acquisition-date folders directly under the landed dir, oldest first.
    pub async fn date_folders(&self) -> Result<Vec<String>, LandedError> {
        let mut folders: Vec<String> = match &self.local_root {
            Some(root) => {
                let (root, dir) = (root.clone(), self.display.clone());
                crate::blocking::run(move || {
                    Ok::<_, LandedError>(
                        std::fs::read_dir(&root)
                            .map_err(|source| LandedError::ListLocal { dir, source })?
                            .filter_map(|e| e.ok())
                            .filter(|e| e.path().is_dir())
                            .filter_map(|e| e.file_name().into_string().ok())
                            .collect(),
                    )
                })
                .await?
            }
            None => self
                .s3_listing(self.prefix.clone())
                .await?
                .prefixes
                .iter()
                .filter_map(|p| p.trim_end_matches('/').rsplit('/').next())
                .map(str::to_owned)
                .collect(),
        };
        folders.retain(|f| is_date_folder(f));
        folders.sort();
        Ok(folders)
    }

    /// The folder `ingest` reads: `--acq-date`'s, else the newest date folder when
    /// there is one, else the landed dir itself (None).
    pub async fn select_folder(
        &self,
        acq_date: Option<&str>,
    ) -> Result<Option<String>, LandedError> {
        let folders = self.date_folders().await?;
        match acq_date {
            Some(date) => {
                if !is_date_folder(date) {
                    return Err(LandedError::BadAcqDate(date.to_owned()));
                }
                if folders.iter().any(|f| f == date) {
                    Ok(Some(date.to_owned()))
                } else {
                    Err(LandedError::NoAcqFolder {
                        date: date.to_owned(),
                        dir: self.display.clone(),
                        found: if folders.is_empty() {
                            "none".into()
                        } else {
                            folders.join(", ")
                        },
                    })
                }
            }
            None => Ok(folders.last().cloned()),
        }
    }

    /// Every file directly in `folder` (or the landed dir), by name. Dot-files
    /// (partial uploads, editor files) and S3 folder markers are skipped.
    pub async fn list(&self, folder: Option<&str>) -> Result<Vec<Entry>, LandedError> {
        let mut entries = Vec::new();
        match &self.local_root {
            Some(_) => {
                let (this, folder) = (self.clone(), folder.map(str::to_owned));
                entries = crate::blocking::run(move || this.list_local(folder.as_deref())).await?;
            }
            None => {
                let prefix = match folder {
                    Some(f) => Some(self.location(None, f)),
                    None => self.prefix.clone(),
                };
                let listed = prefix.as_ref().map(|p| p.to_string());
                for object in self.s3_listing(prefix).await?.objects {
                    // A "folder" marker (`in/`, what the S3 console's "create
                    // folder" writes) holds no file; object_store lists it
                    // without its slash, as the folder itself.
                    let key = object.key.trim_end_matches('/');
                    if object.key.ends_with('/') || listed.as_deref() == Some(key) {
                        continue;
                    }
                    let name = object.key.rsplit('/').next().unwrap_or_default().to_owned();
                    if name.starts_with('.') && name != "." && name != ".." {
                        continue;
                    }
                    entries.push(self.s3_entry(folder, &name, object));
                }
            }
        }
        entries.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(entries)
    }

    /// Objects and folders directly under `prefix`, by object_store, or by the
    /// raw listing when object_store refused a key it cannot represent (an
    /// empty, `.` or `..` segment): such a key then is refused by name alone
    /// instead of hiding every file beside it.
    async fn s3_listing(&self, prefix: Option<ObjPath>) -> Result<S3Listing, LandedError> {
        let list_error = |source| LandedError::List {
            dir: self.display.clone(),
            source,
        };
        match self.store.list_with_delimiter(prefix.as_ref()).await {
            Ok(listed) => Ok(S3Listing {
                objects: listed.objects.into_iter().map(S3Object::from).collect(),
                prefixes: listed
                    .common_prefixes
                    .iter()
                    .map(|p| format!("{p}/"))
                    .collect(),
            }),
            Err(object_store::Error::InvalidPath { source }) if self.raw.is_some() => {
                tracing::warn!(event = "s3_raw_listing",
                    dir = %self.display,
                    "a key in the landed dir is not a plain path ({source}); listing it by hand"
                );
                let raw = self.raw.as_ref().expect("checked above");
                let prefix = prefix.map(|p| format!("{p}/")).unwrap_or_default();
                let listed = raw.list(&prefix).await.map_err(list_error)?;
                Ok(S3Listing {
                    objects: listed
                        .objects
                        .into_iter()
                        .map(|o| S3Object {
                            location: ObjPath::parse(&o.key).ok(),
                            key: o.key,
                            size: o.size,
                            modified: o.last_modified,
                        })
                        .collect(),
                    prefixes: listed.prefixes,
                })
            }
            Err(source) => Err(list_error(source)),
        }
    }

    fn s3_entry(&self, folder: Option<&str>, name: &str, object: S3Object) -> Entry {
        let uri = self.uri(folder, name);
        let location = match (check_name(name), object.location) {
            (Err(reason), _) => {
                return Entry::Refused {
                    name: name.to_owned(),
                    uri,
                    reason,
                };
            }
            (Ok(()), None) => {
                return Entry::Refused {
                    name: name.to_owned(),
                    uri,
                    reason: format!(
                        "its S3 key {:?} has an empty, `.` or `..` segment",
                        object.key
                    ),
                };
            }
            (Ok(()), Some(location)) => location,
        };
        Entry::File(LandedFile {
            location,
            name: name.to_owned(),
            uri,
            size: object.size,
            modified: Some(object.modified),
            window: folder.and_then(WindowKey::parse),
            acq_date: folder.filter(|f| is_date_folder(f)).map(str::to_owned),
        })
    }

    fn list_local(&self, folder: Option<&str>) -> Result<Vec<Entry>, LandedError> {
        let root = self.local_root.as_ref().expect("local landed dir");
        let dir = folder.map_or_else(|| root.clone(), |f| root.join(f));
        let read = std::fs::read_dir(&dir).map_err(|source| LandedError::ListLocal {
            dir: dir.display().to_string(),
            source,
        })?;
        let mut entries = Vec::new();
        for e in read.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || (e.path().is_dir() && !e.path().is_symlink()) {
                continue;
            }
            if let Some(entry) =
                self.local_entry(folder, &name, e.file_name().to_str().is_none())?
            {
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    /// A local file, checked: a safe name, and a real path inside the landed dir
    /// whatever symlinks (the file's or its date folder's) lead there.
    fn local_entry(
        &self,
        folder: Option<&str>,
        name: &str,
        not_utf8: bool,
    ) -> Result<Option<Entry>, LandedError> {
        let root = self.local_root.as_ref().expect("local landed dir");
        let uri = self.uri(folder, name);
        let refuse = |reason: String| {
            Ok(Some(Entry::Refused {
                name: name.to_owned(),
                uri: uri.clone(),
                reason,
            }))
        };
        if not_utf8 {
            return refuse(format!("the file name {name:?} is not valid UTF-8"));
        }
        if let Err(reason) = check_name(name) {
            return refuse(reason);
        }
        // The local store reads `name#123` as a temporary upload of `name`.
        if name
            .rsplit_once('#')
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            return refuse(format!(
                "the file name {name:?} ends in `#` and digits, which the file store reserves; rename it"
            ));
        }
        let path = folder.map_or_else(|| root.join(name), |f| root.join(f).join(name));
        let link = std::fs::symlink_metadata(&path)
            .map_err(|_| LandedError::NotFound { uri: uri.clone() })?;
        match std::fs::canonicalize(&path) {
            Ok(target) if target.starts_with(root) => {}
            Ok(target) if link.file_type().is_symlink() => {
                return refuse(format!(
                    "{name} is a symlink to {}, outside the landed dir",
                    target.display()
                ));
            }
            Ok(target) => {
                // The file is real but its folder is a link that leads elsewhere.
                return refuse(format!(
                    "{name} resolves to {} through a symlinked folder, outside the landed dir",
                    target.display()
                ));
            }
            Err(_) if link.file_type().is_symlink() => {
                return refuse(format!("{name} is a broken symlink"));
            }
            Err(_) => return Err(LandedError::NotFound { uri }),
        }
        let meta =
            std::fs::metadata(&path).map_err(|_| LandedError::NotFound { uri: uri.clone() })?;
        if !meta.is_file() {
            return Ok(None);
        }
        Ok(Some(Entry::File(LandedFile {
            location: self.location(folder, name),
            name: name.to_owned(),
            uri,
            size: meta.len(),
            modified: meta.modified().ok().map(DateTime::<Utc>::from),
            window: folder.and_then(WindowKey::parse),
            acq_date: folder.filter(|f| is_date_folder(f)).map(str::to_owned),
        })))
    }

    /// [`Landed::resolve`] for a local landed dir: file-system calls only.
    fn resolve_local(&self, file_path: &str, acq_date: Option<&str>) -> Result<Entry, LandedError> {
        let root = self.local_root.as_ref().expect("local landed dir");
        let outside = || LandedError::Outside {
            path: file_path.to_owned(),
            dir: self.display.clone(),
        };
        // Split into an optional date folder and a name, relative to the landed dir.
        let (folder, name): (Option<String>, String) = if file_path.contains('/') {
            let path = Path::new(file_path);
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(outside)?;
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let parent = std::fs::canonicalize(parent).map_err(|_| LandedError::NotFound {
                uri: file_path.to_owned(),
            })?;
            if parent == *root {
                (None, name)
            } else {
                match parent.strip_prefix(root).ok().and_then(|rel| rel.to_str()) {
                    Some(rel) if is_file_folder(rel) => (Some(rel.to_owned()), name),
                    _ => return Err(outside()),
                }
            }
        } else {
            (acq_date.map(str::to_owned), file_path.to_owned())
        };
        let folder = folder.as_deref();
        match self.local_entry(folder, &name, false)? {
            Some(entry) => Ok(entry),
            None => {
                let path = folder.map_or_else(|| root.join(&name), |f| root.join(f).join(&name));
                let what = if path.is_dir() {
                    "a directory"
                } else {
                    "not a regular file (a FIFO, socket or device)"
                };
                Err(LandedError::NotAFile {
                    uri: self.uri(folder, &name),
                    what,
                })
            }
        }
    }

    /// The file `--file-path` names: a name inside the landed dir (or its
    /// `--acq-date` folder), a path to such a file, or an `s3://` URL under it.
    pub async fn resolve(
        &self,
        file_path: &str,
        acq_date: Option<&str>,
    ) -> Result<Entry, LandedError> {
        if let Some(d) = acq_date
            && !is_date_folder(d)
        {
            return Err(LandedError::BadAcqDate(d.to_owned()));
        }
        if file_path.trim().is_empty() {
            return Err(LandedError::EmptyPath);
        }
        if self.local_root.is_some() {
            let (this, file_path) = (self.clone(), file_path.to_owned());
            let acq_date = acq_date.map(str::to_owned);
            return crate::blocking::run(move || {
                this.resolve_local(&file_path, acq_date.as_deref())
            })
            .await;
        }
        let outside = || LandedError::Outside {
            path: file_path.to_owned(),
            dir: self.display.clone(),
        };
        // Split into an optional date folder and a name, relative to the prefix.
        let rel = match file_path.strip_prefix("s3://") {
            Some(_) => file_path
                .strip_prefix(&format!("{}/", self.display))
                .ok_or_else(outside)?,
            None => file_path,
        };
        let (folder, name): (Option<String>, String) = match rel.rsplit_once('/') {
            Some((f, n)) if is_file_folder(f) => (Some(f.to_owned()), n.to_owned()),
            Some(_) => return Err(outside()),
            None => (acq_date.map(str::to_owned), rel.to_owned()),
        };
        let folder = folder.as_deref();
        if let Err(reason) = check_name(&name) {
            return Ok(Entry::Refused {
                uri: self.uri(folder, &name),
                name,
                reason,
            });
        }
        let location = self.location(folder, &name);
        match self.store.head(&location).await {
            Ok(meta) => Ok(self.s3_entry(folder, &name, meta.into())),
            Err(object_store::Error::NotFound { .. }) => Err(LandedError::NotFound {
                uri: self.uri(folder, &name),
            }),
            Err(source) => Err(LandedError::Read {
                uri: self.uri(folder, &name),
                source,
            }),
        }
    }

    /// Bytes `range` of a file (clamped to its size).
    pub async fn read_range(
        &self,
        file: &LandedFile,
        start: u64,
        end: u64,
    ) -> Result<Bytes, LandedError> {
        let end = end.min(file.size);
        if start >= end {
            return Ok(Bytes::new());
        }
        self.store
            .get_range(&file.location, start..end)
            .await
            .map_err(|source| LandedError::Read {
                uri: file.uri.clone(),
                source,
            })
    }

    /// Streams the whole file once: its sha256 and, when asked, where it stops
    /// being UTF-8. The digest is computed on a blocking thread while the next
    /// chunks are read. A digest remembered (see
    /// [`Landed::remembering_digests`]) is given without reading, unless the
    /// UTF-8 check is asked.
    pub async fn fingerprint(
        &self,
        file: &LandedFile,
        check_utf8: bool,
    ) -> Result<Fingerprint, LandedError> {
        let key: DigestKey = (file.uri.clone(), file.size, file.modified);
        let memo = self.digests.as_ref().and_then(|d| d.lock().ok());
        let known = memo.and_then(|d| d.get(&key).cloned());
        if let (Some(sha256), false) = (known, check_utf8) {
            return Ok(Fingerprint {
                sha256,
                size: file.size,
                utf8_error: None,
            });
        }
        let fingerprint = self.read_fingerprint(file, check_utf8).await?;
        if let Some(mut digests) = self.digests.as_ref().and_then(|d| d.lock().ok()) {
            digests.insert(key, fingerprint.sha256.clone());
        }
        Ok(fingerprint)
    }

    /// [`Landed::fingerprint`] read from the store. A local file is read on
    /// the hashing thread itself, a MiB at a time; a remote one streams, its
    /// chunks gathered to a MiB before they cross to that thread. (The local
    /// store's stream gives 8 KiB chunks: handing each to the thread made a
    /// 29 MB file's digest cost 150 ms of wake-ups for 20 ms of hashing.)
    async fn read_fingerprint(
        &self,
        file: &LandedFile,
        check_utf8: bool,
    ) -> Result<Fingerprint, LandedError> {
        let read_err = |source| LandedError::Read {
            uri: file.uri.clone(),
            source,
        };
        let got = self.store.get(&file.location).await.map_err(read_err)?;
        if let object_store::GetResultPayload::File(mut f, _) = got.payload {
            let mut digest = Digesting::new(check_utf8);
            let read = crate::blocking::run(move || {
                let mut buf = vec![0; DIGEST_CHUNK];
                loop {
                    match std::io::Read::read(&mut f, &mut buf) {
                        Ok(0) => return Ok(digest.finish()),
                        Ok(n) => digest.feed(&buf[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            });
            return read.await.map_err(|e| {
                read_err(object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: Box::new(e),
                })
            });
        }
        let mut stream = got.into_stream();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let digest = crate::blocking::run(move || {
            let mut digest = Digesting::new(check_utf8);
            while let Some(chunk) = rx.blocking_recv() {
                digest.feed(&chunk);
            }
            digest.finish()
        });
        let read = async move {
            let mut gathered = bytes::BytesMut::new();
            while let Some(chunk) = stream.try_next().await.map_err(read_err)? {
                gathered.extend_from_slice(&chunk);
                if gathered.len() >= DIGEST_CHUNK
                    && tx.send(gathered.split().freeze()).await.is_err()
                {
                    return Ok(());
                }
            }
            let _ = tx.send(gathered.freeze()).await;
            Ok::<_, LandedError>(())
            // Dropping `tx` here ends the hashing loop.
        };
        let (read, fingerprint) = tokio::join!(read, digest);
        read?;
        Ok(fingerprint)
    }
}

/// How much of a file is hashed at a time.
const DIGEST_CHUNK: usize = 1 << 20;

/// A file's sha256, size and (when asked) UTF-8 check, fed in order.
struct Digesting {
    hasher: Sha256,
    utf8: Option<Utf8Check>,
    size: u64,
}

impl Digesting {
    fn new(check_utf8: bool) -> Digesting {
        Digesting {
            hasher: Sha256::new(),
            utf8: check_utf8.then(Utf8Check::default),
            size: 0,
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        if let Some(check) = self.utf8.as_mut() {
            check.feed(chunk);
        }
    }

    fn finish(self) -> Fingerprint {
        Fingerprint {
            sha256: hex::encode(self.hasher.finalize()),
            size: self.size,
            utf8_error: self.utf8.and_then(Utf8Check::finish),
        }
    }
}

/// What to set when object_store found no S3 credentials and fell back to the
/// EC2 instance metadata endpoint (a raw `169.254.169.254 … 403` otherwise).
fn s3_hint(e: &object_store::Error) -> &'static str {
    let text = crate::exit::report(e);
    if text.contains("169.254.169.254") || text.to_ascii_lowercase().contains("credential") {
        ": no S3 credentials were found; set S3_ACCESS_KEY and S3_SECRET_KEY (or \
         AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run with an IAM role), and \
         S3_ENDPOINT / S3_REGION for a server other than AWS"
    } else {
        ""
    }
}

impl Entry {
    pub fn name(&self) -> &str {
        match self {
            Entry::File(f) => &f.name,
            Entry::Refused { name, .. } => name,
        }
    }

    /// The acquisition-date folder the file sits in, if any.
    pub fn acq_date(&self) -> Option<&str> {
        match self {
            Entry::File(f) => f.acq_date.as_deref(),
            Entry::Refused { .. } => None,
        }
    }
}

/// What streaming a file told us.
#[derive(Debug, Clone)]
pub struct Fingerprint {
    pub sha256: String,
    pub size: u64,
    /// Where the bytes stop being UTF-8, as "line N (byte offset M)".
    pub utf8_error: Option<String>,
}

/// Incremental UTF-8 validation across chunk boundaries, tracking the line.
#[derive(Debug, Default)]
struct Utf8Check {
    carry: Vec<u8>,
    offset: u64,
    line: u64,
    error: Option<String>,
}

impl Utf8Check {
    fn feed(&mut self, chunk: &[u8]) {
        if self.error.is_some() {
            return;
        }
        let joined;
        let data: &[u8] = if self.carry.is_empty() {
            chunk
        } else {
            joined = [std::mem::take(&mut self.carry).as_slice(), chunk].concat();
            &joined
        };
        let valid = match std::str::from_utf8(data) {
            Ok(_) => data.len(),
            Err(e) => {
                let valid = e.valid_up_to();
                if e.error_len().is_some() {
                    let lines = newlines(&data[..valid]);
                    self.error = Some(format!(
                        "line {} (byte offset {})",
                        self.line + lines + 1,
                        self.offset + valid as u64
                    ));
                    return;
                }
                // An incomplete sequence at the end: finish it with the next chunk.
                self.carry = data[valid..].to_vec();
                valid
            }
        };
        self.line += newlines(&data[..valid]);
        self.offset += valid as u64;
    }

    fn finish(self) -> Option<String> {
        if self.error.is_none() && !self.carry.is_empty() {
            return Some(format!(
                "line {} (byte offset {}, truncated character at the end)",
                self.line + 1,
                self.offset
            ));
        }
        self.error
    }
}

fn newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|b| **b == b'\n').count() as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn missing_s3_credentials_say_what_to_set() {
        let fell_back = object_store::Error::Generic {
            store: "S3",
            source: "error sending request for url (http://169.254.169.254/latest/api/token)"
                .into(),
        };
        assert!(s3_hint(&fell_back).contains("S3_ACCESS_KEY"));
        let other = object_store::Error::Generic {
            store: "S3",
            source: "connection refused".into(),
        };
        assert_eq!(s3_hint(&other), "");
    }

    use super::*;

    #[test]
    fn safe_names() {
        assert!(check_name("citizens_2025-06.csv").is_ok());
        assert!(check_name("données 2025.csv").is_ok());
        assert!(check_name("n_2030-08...csv").is_ok(), "dots are not a path");
        for bad in [
            "",
            "..",
            "a/../b",
            "a/b",
            "a\\b",
            "a\u{7}b.csv",
            "a\nb",
            ".",
            "../x.csv",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn utf8_check_spans_chunks_and_names_the_line() {
        let text = "a,b\nété,1\n".as_bytes();
        // Split inside the two-byte `é`.
        let mut c = Utf8Check::default();
        c.feed(&text[..5]);
        c.feed(&text[5..]);
        assert_eq!(c.finish(), None);

        let mut c = Utf8Check::default();
        c.feed(b"a,b\nok,1\n");
        c.feed(b"caf\xe9,2\n");
        assert_eq!(c.finish().as_deref(), Some("line 3 (byte offset 12)"));

        let mut c = Utf8Check::default();
        c.feed(b"abc\xc3");
        assert!(c.finish().unwrap().contains("truncated"));
    }

    #[test]
    fn window_folders_of_the_monitoring_layout() {
        use super::WindowKey;
        let key = WindowKey::parse("agency/tenant-a/files/orders/2026-01-04/12").unwrap();
        assert_eq!(key.agency, "tenant-a");
        assert_eq!(key.file_name, "orders");
        assert_eq!(key.window.to_string(), "2026-01-04 12:00:00");
        for not in [
            "agency/tenant-a/files/orders/2026-01-04",      // no hour
            "agency/tenant-a/files/orders/2026-01-04/24",   // no such hour
            "agency/tenant-a/files/orders/2026-02-30/12",   // no such day
            "agency/tenant-a/files/orders/2026-01-04/7",    // one digit
            "agency/tenant-a/file/orders/2026-01-04/12",    // not `files`
            "agency/../files/orders/2026-01-04/12",         // `..`
            "x/agency/tenant-a/files/orders/2026-01-04/12", // deeper
            "2026-01-04",
        ] {
            assert_eq!(WindowKey::parse(not), None, "{not}");
        }
        assert!(super::is_file_folder("2026-01-04"));
    }

    /// The one file of `landed`, as a listing finds it.
    async fn only_file(landed: &Landed) -> LandedFile {
        match landed.list(None).await.unwrap().pop() {
            Some(Entry::File(f)) => f,
            other => panic!("one file expected: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_remembered_digest_is_read_once_and_ingest_always_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a_2025-01.csv");
        std::fs::write(&path, "id\n1\n").unwrap();
        let root = dir.path().to_str().unwrap();
        let (plain, remembering) = (
            Landed::open(root).unwrap(),
            Landed::open(root).unwrap().remembering_digests(),
        );
        let f = only_file(&plain).await;
        let first = remembering.fingerprint(&f, false).await.unwrap().sha256;
        // New bytes of the same size and time: a digest read again finds them.
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::fs::write(&path, "id\n2\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        let g = only_file(&plain).await;
        assert_eq!((g.size, g.modified), (f.size, f.modified));
        let read = plain.fingerprint(&g, false).await.unwrap().sha256;
        assert_ne!(read, first);
        assert_eq!(
            remembering.fingerprint(&g, false).await.unwrap().sha256,
            first
        );
        assert_eq!(
            remembering.fingerprint(&g, true).await.unwrap().sha256,
            read
        );
    }
}
