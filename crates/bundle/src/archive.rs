//! A deterministic tar.gz builder.
//!
//! Bundles are downloaded, checksummed and compared ("did the config change?"), so
//! the same input must give the same bytes every time, on every machine. A plain
//! `tar::Builder` fed from the filesystem leaks mtimes, owners, user names and
//! directory order into the archive; this builder takes everything from memory and
//! fixes every header field instead:
//!
//! - entries sorted by path (a directory's path is a prefix of its children's, so
//!   directories always come before their contents),
//! - parent directories created implicitly with mode 0755,
//! - ustar headers with mtime 0, uid/gid 0, empty user and group names, device
//!   numbers 0, the path split into the ustar `prefix`/`name` fields by hand
//!   (a path that cannot be split gets a GNU long-name entry, same fixed fields),
//! - gzip with mtime 0 and OS byte 255 ("unknown") via [`flate2::GzBuilder`].
//!
//! All entries live under one top-level directory so that unpacking never
//! scatters files into the current directory. Paths are restricted to
//! `[A-Za-z0-9._/-]`, relative, without `.`/`..` components: a bundle can never
//! write outside the directory it is unpacked into.

use std::collections::BTreeMap;
use std::io::Write;

use flate2::{Compression, GzBuilder};
use tar::{EntryType, Header};

use crate::BundleError;

/// Mode of the implicit directories.
pub const DIR_MODE: u32 = 0o755;

/// Longest path this builder accepts. Paths that do not fit a ustar header
/// (100 bytes of name, 155 of prefix) are written with a GNU long-name entry.
const MAX_PATH_LEN: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir,
    File { contents: Vec<u8>, mode: u32 },
}

/// Collects files in memory and writes them as a deterministic `.tar.gz`.
///
/// ```
/// use serviceradar_bundle::archive::ArchiveBuilder;
///
/// let mut b = ArchiveBuilder::new("bundle-acme")?;
/// b.add_file("certs/leaf-key.pem", b"...".to_vec(), 0o600)?;
/// b.add_file("README.md", b"hello\n".to_vec(), 0o644)?;
/// let first = b.clone().finish()?;
/// assert_eq!(first, b.finish()?);
/// # Ok::<(), serviceradar_bundle::BundleError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ArchiveBuilder {
    root: String,
    /// Keyed by the full in-archive path; directories end with `/`.
    entries: BTreeMap<String, Entry>,
}

impl ArchiveBuilder {
    /// Starts an archive whose entries all live under the directory `root`
    /// (a single path component such as `serviceradar-site-acme-nyc`).
    pub fn new(root: &str) -> Result<Self, BundleError> {
        check_path(root)?;
        if root.contains('/') {
            return Err(BundleError::InvalidPath {
                path: root.to_owned(),
                reason: "the top-level directory must be a single path component",
            });
        }
        let mut entries = BTreeMap::new();
        entries.insert(format!("{root}/"), Entry::Dir);
        Ok(Self {
            root: root.to_owned(),
            entries,
        })
    }

    /// The top-level directory every entry lives under.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Adds a regular file at `path` (relative to the top-level directory) with
    /// permission bits `mode` (at most `0o777`). Missing parent directories are
    /// added with mode 0755.
    pub fn add_file(
        &mut self,
        path: &str,
        contents: impl Into<Vec<u8>>,
        mode: u32,
    ) -> Result<(), BundleError> {
        check_path(path)?;
        if mode > 0o777 {
            return Err(BundleError::InvalidMode {
                path: path.to_owned(),
                mode,
            });
        }
        let full = format!("{}/{path}", self.root);
        if full.len() + 1 > MAX_PATH_LEN {
            return Err(BundleError::InvalidPath {
                path: path.to_owned(),
                reason: "path too long",
            });
        }
        if self.entries.contains_key(&full) || self.entries.contains_key(&format!("{full}/")) {
            return Err(BundleError::DuplicatePath(path.to_owned()));
        }
        // Parent directories; a parent must not already be a file.
        let mut parents = Vec::new();
        for (i, _) in full.match_indices('/') {
            let dir = &full[..i];
            if self.entries.contains_key(dir) {
                return Err(BundleError::DuplicatePath(
                    dir.strip_prefix(&format!("{}/", self.root))
                        .unwrap_or(dir)
                        .to_owned(),
                ));
            }
            parents.push(format!("{dir}/"));
        }
        for dir in parents {
            self.entries.entry(dir).or_insert(Entry::Dir);
        }
        self.entries.insert(
            full,
            Entry::File {
                contents: contents.into(),
                mode,
            },
        );
        Ok(())
    }

    /// Writes the archive: sorted entries, fixed headers, gzip with mtime 0.
    pub fn finish(self) -> Result<Vec<u8>, BundleError> {
        let gz = GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(Vec::new(), Compression::default());
        let mut tar = tar::Builder::new(gz);
        for (path, entry) in &self.entries {
            let (kind, mode, data): (EntryType, u32, &[u8]) = match entry {
                Entry::Dir => (EntryType::Directory, DIR_MODE, &[]),
                Entry::File { contents, mode } => (EntryType::Regular, *mode, contents),
            };
            let mut header = Header::new_ustar();
            if !set_ustar_path(&mut header, path) {
                // Too long for ustar (e.g. a 146-byte top-level directory built
                // from two 63-character slugs): a GNU long-name entry first,
                // then a GNU header carrying the truncated name.
                let mut long = Header::new_gnu();
                let mut name = path.as_bytes().to_vec();
                name.push(0);
                long.as_gnu_mut()
                    .ok_or(BundleError::InvalidPath {
                        path: path.clone(),
                        reason: "cannot build a GNU header",
                    })?
                    .name[..LONG_LINK.len()]
                    .copy_from_slice(LONG_LINK);
                fill_header(&mut long, EntryType::GNULongName, 0o644, name.len())?;
                tar.append(&long, name.as_slice())?;
                header = Header::new_gnu();
                if let Some(gnu) = header.as_gnu_mut() {
                    let n = gnu.name.len().min(path.len());
                    gnu.name[..n].copy_from_slice(&path.as_bytes()[..n]);
                }
            }
            fill_header(&mut header, kind, mode, data.len())?;
            tar.append(&header, data)?;
        }
        let mut gz = tar.into_inner()?;
        gz.flush()?;
        Ok(gz.finish()?)
    }
}

/// Name of GNU long-name pseudo entries, as GNU tar writes it.
const LONG_LINK: &[u8] = b"././@LongLink";

/// Sets every header field but the path explicitly.
fn fill_header(
    header: &mut Header,
    kind: EntryType,
    mode: u32,
    size: usize,
) -> Result<(), BundleError> {
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(size as u64);
    header.set_username("")?;
    header.set_groupname("")?;
    header.set_device_major(0)?;
    header.set_device_minor(0)?;
    header.set_cksum();
    Ok(())
}

/// Stores `path` in the ustar `name` (100 bytes) and, when longer, `prefix`
/// (155 bytes) fields, split at a `/`. Done by hand so that a directory keeps its
/// trailing `/` and nothing depends on the platform's `Path` handling. Returns
/// false when the path does not fit.
fn set_ustar_path(header: &mut Header, path: &str) -> bool {
    let Some(ustar) = header.as_ustar_mut() else {
        return false;
    };
    let bytes = path.as_bytes();
    if bytes.len() <= ustar.name.len() {
        ustar.name[..bytes.len()].copy_from_slice(bytes);
        return true;
    }
    // Split at the first `/` that leaves at most 100 bytes for the name; the
    // separator itself is not stored. Skip the final byte so a directory's
    // trailing `/` is never the split point.
    let body = &path[..path.len() - 1];
    let Some(split) = body
        .match_indices('/')
        .map(|(i, _)| i)
        .find(|&i| bytes.len() - i - 1 <= ustar.name.len())
    else {
        return false;
    };
    let (prefix, name) = (&bytes[..split], &bytes[split + 1..]);
    if prefix.len() > ustar.prefix.len() {
        return false;
    }
    ustar.prefix[..prefix.len()].copy_from_slice(prefix);
    ustar.name[..name.len()].copy_from_slice(name);
    true
}

/// Checks a relative archive path: non-empty, not absolute, no `.`, `..` or
/// empty components, only `[A-Za-z0-9._/-]`.
pub fn check_path(path: &str) -> Result<(), BundleError> {
    let bad = |reason| {
        Err(BundleError::InvalidPath {
            path: path.to_owned(),
            reason,
        })
    };
    if path.is_empty() {
        return bad("empty path");
    }
    if path.starts_with('/') {
        return bad("absolute paths are not allowed");
    }
    if !path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))
    {
        return bad("only characters A-Z a-z 0-9 . _ / - are allowed");
    }
    for component in path.split('/') {
        match component {
            "" => return bad("empty path component (leading, trailing or double '/')"),
            "." | ".." => return bad("'.' and '..' components are not allowed"),
            _ => {}
        }
    }
    if path.len() > MAX_PATH_LEN {
        return bad("path too long");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read_back(bytes: &[u8]) -> Vec<(String, u32, EntryType, Vec<u8>)> {
        let gz = flate2::read::GzDecoder::new(bytes);
        let mut archive = tar::Archive::new(gz);
        let mut out = Vec::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let path = String::from_utf8(entry.path_bytes().into_owned()).expect("utf8");
            let mode = entry.header().mode().expect("mode");
            let kind = entry.header().entry_type();
            assert_eq!(entry.header().mtime().expect("mtime"), 0);
            assert_eq!(entry.header().uid().expect("uid"), 0);
            assert_eq!(entry.header().gid().expect("gid"), 0);
            assert_eq!(entry.header().username().expect("uname"), Some(""));
            assert_eq!(entry.header().groupname().expect("gname"), Some(""));
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("read");
            out.push((path, mode, kind, data));
        }
        out
    }

    fn sample() -> ArchiveBuilder {
        let mut b = ArchiveBuilder::new("root-dir").expect("root");
        b.add_file("setup.sh", b"#!/bin/sh\n".to_vec(), 0o755)
            .expect("add");
        b.add_file("certs/leaf-key.pem", b"key".to_vec(), 0o600)
            .expect("add");
        b.add_file("README.md", b"readme".to_vec(), 0o644)
            .expect("add");
        b.add_file("certs-extra/a", b"a".to_vec(), 0o644)
            .expect("add");
        b
    }

    #[test]
    fn same_input_gives_identical_bytes() {
        let a = sample().finish().expect("finish");
        let b = sample().finish().expect("finish");
        assert_eq!(a, b);
        // gzip header: mtime 0, OS unknown
        assert_eq!(&a[4..8], &[0, 0, 0, 0]);
        assert_eq!(a[9], 255);
    }

    #[test]
    fn insertion_order_does_not_matter() {
        let mut b = ArchiveBuilder::new("root-dir").expect("root");
        b.add_file("certs-extra/a", b"a".to_vec(), 0o644)
            .expect("add");
        b.add_file("README.md", b"readme".to_vec(), 0o644)
            .expect("add");
        b.add_file("certs/leaf-key.pem", b"key".to_vec(), 0o600)
            .expect("add");
        b.add_file("setup.sh", b"#!/bin/sh\n".to_vec(), 0o755)
            .expect("add");
        assert_eq!(
            b.finish().expect("finish"),
            sample().finish().expect("finish")
        );
    }

    #[test]
    fn entries_sorted_with_implicit_dirs_and_modes() {
        let entries = read_back(&sample().finish().expect("finish"));
        let listing: Vec<(&str, u32, EntryType)> = entries
            .iter()
            .map(|(p, m, k, _)| (p.as_str(), *m, *k))
            .collect();
        assert_eq!(
            listing,
            vec![
                ("root-dir/", 0o755, EntryType::Directory),
                ("root-dir/README.md", 0o644, EntryType::Regular),
                ("root-dir/certs-extra/", 0o755, EntryType::Directory),
                ("root-dir/certs-extra/a", 0o644, EntryType::Regular),
                ("root-dir/certs/", 0o755, EntryType::Directory),
                ("root-dir/certs/leaf-key.pem", 0o600, EntryType::Regular),
                ("root-dir/setup.sh", 0o755, EntryType::Regular),
            ]
        );
        let mut sorted: Vec<&str> = listing.iter().map(|(p, _, _)| *p).collect();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            listing.iter().map(|(p, _, _)| *p).collect::<Vec<_>>()
        );
        assert_eq!(entries[5].3, b"key");
    }

    #[test]
    fn long_paths_use_the_ustar_prefix() {
        let root = format!("serviceradar-site-{}-{}", "t".repeat(63), "s".repeat(63));
        let mut b = ArchiveBuilder::new(&root).expect("root");
        let path = format!("{}/{}.pem", "d".repeat(40), "f".repeat(60));
        b.add_file(&path, b"x".to_vec(), 0o644).expect("add");
        let entries = read_back(&b.finish().expect("finish"));
        assert_eq!(entries[2].0, format!("{root}/{path}"));
        assert_eq!(entries[1].0, format!("{root}/{}/", "d".repeat(40)));
    }

    #[test]
    fn rejects_bad_paths() {
        let mut b = ArchiveBuilder::new("root").expect("root");
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "a b",
            "a\nb",
            "a$(x)",
            "a\\b",
            "ä",
        ] {
            assert!(
                matches!(
                    b.add_file(bad, Vec::new(), 0o644),
                    Err(BundleError::InvalidPath { .. })
                ),
                "{bad:?} accepted"
            );
        }
        assert!(ArchiveBuilder::new("a/b").is_err());
        assert!(ArchiveBuilder::new("..").is_err());
        assert!(b.add_file(&"x".repeat(600), Vec::new(), 0o644).is_err());
    }

    #[test]
    fn rejects_duplicates_conflicts_and_special_modes() {
        let mut b = ArchiveBuilder::new("root").expect("root");
        b.add_file("a/b", Vec::new(), 0o644).expect("add");
        assert!(matches!(
            b.add_file("a/b", Vec::new(), 0o644),
            Err(BundleError::DuplicatePath(_))
        ));
        assert!(matches!(
            b.add_file("a", Vec::new(), 0o644),
            Err(BundleError::DuplicatePath(_))
        ));
        assert!(matches!(
            b.add_file("a/b/c", Vec::new(), 0o644),
            Err(BundleError::DuplicatePath(_))
        ));
        assert!(matches!(
            b.add_file("s", Vec::new(), 0o4755),
            Err(BundleError::InvalidMode { .. })
        ));
    }
}
