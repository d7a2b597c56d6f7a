#![allow(dead_code)]
//! A FUSE file system that loses what was not synced when the power is "cut", after LazyFS
//! (Ramos et al., "LazyFS: a FUSE file system with an internal page cache to simulate power
//! failures", 2023): every file's data and every directory's entries exist twice, as the
//! programs see them and as they would be found after a power cut.
//!
//! - A `write` or `truncate` changes a file's visible data only; `fsync`/`fdatasync` of the file
//!   makes its visible data durable.
//! - A `create`, `mkdir`, `unlink`, `rmdir` or `rename` changes a directory's visible entries only;
//!   `fsync` of the directory makes its visible entries durable (as POSIX asks; ext4 and XFS make
//!   a new file's entry durable with the file's own fsync too, so this model is the stricter one).
//! - [`LazyFs::cut`] throws the visible state away: every file and directory is again what its
//!   last sync left, and whatever no durable entry reaches is gone.
//!
//! Both states live in the test process's memory (the "disk" is the durable copy); the kernel
//! caches nothing (direct I/O, zero attribute and entry timeouts), so after a cut every read
//! sees the survived state. Mounting needs root (or `fusermount3`) and `/dev/fuse`.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, MountOption,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

const ROOT: u64 = 1;
const TTL: Duration = Duration::ZERO;

/// One file's two states.
#[derive(Clone, Default)]
struct FileData {
    /// What reads see.
    visible: Vec<u8>,
    /// What a cut leaves.
    durable: Vec<u8>,
    /// Byte ranges of `visible` written since the last sync.
    dirty: Vec<(usize, usize)>,
}

enum Kind {
    File(FileData),
    Dir { visible: BTreeMap<OsString, u64>, durable: BTreeMap<OsString, u64> },
}

struct Node {
    kind: Kind,
    perm: u16,
    mtime: SystemTime,
}

/// Counts of what the file system did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// File syncs (`fsync`, `fdatasync`).
    pub file_syncs: u64,
    /// Directory syncs.
    pub dir_syncs: u64,
    /// Cuts.
    pub cuts: u64,
    /// Bytes of file data written and never synced that cuts dropped.
    pub dropped_bytes: u64,
    /// Files and directories whose entries cuts dropped (created and never made durable).
    pub dropped_entries: u64,
}

struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    stats: Stats,
}

impl State {
    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let node = self.nodes.get(&ino)?;
        let (kind, size, nlink) = match &node.kind {
            Kind::File(f) => (FileType::RegularFile, f.visible.len() as u64, 1),
            Kind::Dir { visible, .. } => (FileType::Directory, visible.len() as u64, 2),
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: node.mtime,
            mtime: node.mtime,
            ctime: node.mtime,
            crtime: node.mtime,
            kind,
            perm: node.perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        })
    }

    fn dir(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.kind) {
            Some(Kind::Dir { visible, .. }) => Ok(visible),
            Some(Kind::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn file(&mut self, ino: u64) -> Result<&mut FileData, Errno> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.kind) {
            Some(Kind::File(f)) => Ok(f),
            Some(Kind::Dir { .. }) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn add(&mut self, parent: u64, name: &OsStr, kind: Kind, perm: u16) -> Result<u64, Errno> {
        if self.dir(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, Node { kind, perm, mtime: SystemTime::now() });
        self.dir(parent)?.insert(name.to_os_string(), ino);
        Ok(ino)
    }

    fn is_empty_dir(&self, ino: u64) -> bool {
        matches!(self.nodes.get(&ino).map(|n| &n.kind), Some(Kind::Dir { visible, .. }) if visible.is_empty())
    }

    /// The power cut: every node back to its durable state, unreachable nodes gone.
    fn cut(&mut self) {
        self.stats.cuts += 1;
        let before: Vec<u64> = self.reachable(|k| match k {
            Kind::Dir { visible, .. } => visible.values().copied().collect(),
            Kind::File(_) => Vec::new(),
        });
        for node in self.nodes.values_mut() {
            match &mut node.kind {
                Kind::File(f) => {
                    self.stats.dropped_bytes += f.dirty.iter().map(|(a, b)| (b - a) as u64).sum::<u64>();
                    f.visible = f.durable.clone();
                    f.dirty.clear();
                }
                Kind::Dir { visible, durable } => *visible = durable.clone(),
            }
        }
        let after = self.reachable(|k| match k {
            Kind::Dir { visible, .. } => visible.values().copied().collect(),
            Kind::File(_) => Vec::new(),
        });
        self.stats.dropped_entries += before.iter().filter(|i| !after.contains(i)).count() as u64;
        self.nodes.retain(|ino, _| after.contains(ino));
    }

    /// Inodes reachable from the root through `children`.
    fn reachable(&self, children: impl Fn(&Kind) -> Vec<u64>) -> Vec<u64> {
        let mut seen = vec![ROOT];
        let mut stack = vec![ROOT];
        while let Some(ino) = stack.pop() {
            if let Some(node) = self.nodes.get(&ino) {
                for c in children(&node.kind) {
                    if !seen.contains(&c) {
                        seen.push(c);
                        stack.push(c);
                    }
                }
            }
        }
        seen
    }

    /// Forgets nodes that neither the visible nor the durable tree reaches (unlinked and synced).
    fn collect(&mut self) {
        let keep = self.reachable(|k| match k {
            Kind::Dir { visible, durable } => visible.values().chain(durable.values()).copied().collect(),
            Kind::File(_) => Vec::new(),
        });
        self.nodes.retain(|ino, _| keep.contains(ino));
    }
}

/// The file system; clones share it. Mount it with [`LazyFs::mount`], cut with [`LazyFs::cut`].
#[derive(Clone)]
pub struct LazyFs {
    state: Arc<Mutex<State>>,
}

/// A mounted [`LazyFs`]; unmounted when dropped.
pub struct Mounted {
    /// The file system, to cut it.
    pub fs: LazyFs,
    session: Option<fuser::BackgroundSession>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
    }
}

impl LazyFs {
    /// An empty file system.
    pub fn new() -> LazyFs {
        let root = Node {
            kind: Kind::Dir { visible: BTreeMap::new(), durable: BTreeMap::new() },
            perm: 0o755,
            mtime: SystemTime::now(),
        };
        let state = State { nodes: HashMap::from([(ROOT, root)]), next_ino: ROOT + 1, stats: Stats::default() };
        LazyFs { state: Arc::new(Mutex::new(state)) }
    }

    /// Mounts a new file system on `dir` (an existing empty directory).
    ///
    /// # Errors
    /// Why it cannot be mounted (no `/dev/fuse`, not root, ...).
    pub fn mount(dir: &Path) -> std::io::Result<Mounted> {
        let fs = LazyFs::new();
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("lazyfs".into()), MountOption::DefaultPermissions];
        config.n_threads = Some(1);
        let session = fuser::spawn_mount(fs.clone(), dir, &config)?;
        Ok(Mounted { fs, session: Some(session) })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The power cut: drops every write and every directory change not synced since. Call it only
    /// once the writing processes are dead (reaped): a request they had in flight is answered
    /// before they exit.
    pub fn cut(&self) {
        self.lock().cut();
    }

    /// What the file system did so far.
    pub fn stats(&self) -> Stats {
        self.lock().stats
    }
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut s = self.lock();
        let found = s.dir(parent.0).map(|d| d.get(name).copied());
        match found {
            Ok(Some(ino)) => match s.attr(ino) {
                Some(a) => reply.entry(&TTL, &a, Generation(0)),
                None => reply.error(Errno::ENOENT),
            },
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.lock().attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = self.lock();
        if let Some(size) = size {
            match s.file(ino.0) {
                Ok(f) => truncate(f, size as usize),
                Err(e) => return reply.error(e),
            }
        }
        match s.nodes.get_mut(&ino.0) {
            Some(node) => {
                if let Some(mode) = mode {
                    node.perm = (mode & 0o7777) as u16;
                }
                node.mtime = SystemTime::now();
            }
            None => return reply.error(Errno::ENOENT),
        }
        match s.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, _umask: u32, reply: ReplyEntry) {
        let mut s = self.lock();
        let dir = Kind::Dir { visible: BTreeMap::new(), durable: BTreeMap::new() };
        match s.add(parent.0, name, dir, (mode & 0o7777) as u16) {
            Ok(ino) => reply.entry(&TTL, &s.attr(ino).expect("just added"), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.lock();
        let removed = s.dir(parent.0).map(|d| d.remove(name));
        match removed {
            Ok(Some(_)) => {
                s.collect();
                reply.ok()
            }
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.lock();
        let target = match s.dir(parent.0).map(|d| d.get(name).copied()) {
            Ok(Some(ino)) => ino,
            Ok(None) => return reply.error(Errno::ENOENT),
            Err(e) => return reply.error(e),
        };
        if !s.is_empty_dir(target) {
            return reply.error(Errno::ENOTEMPTY);
        }
        let _ = s.dir(parent.0).map(|d| d.remove(name));
        s.collect();
        reply.ok();
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut s = self.lock();
        let ino = match s.dir(parent.0).map(|d| d.get(name).copied()) {
            Ok(Some(ino)) => ino,
            Ok(None) => return reply.error(Errno::ENOENT),
            Err(e) => return reply.error(e),
        };
        let existing = match s.dir(newparent.0).map(|d| d.get(newname).copied()) {
            Ok(e) => e,
            Err(e) => return reply.error(e),
        };
        if flags.contains(RenameFlags::RENAME_EXCHANGE) || flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        if let Some(old) = existing {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return reply.error(Errno::EEXIST);
            }
            if old == ino {
                return reply.ok();
            }
            let old_is_dir = matches!(s.nodes.get(&old).map(|n| &n.kind), Some(Kind::Dir { .. }));
            if old_is_dir && !s.is_empty_dir(old) {
                return reply.error(Errno::ENOTEMPTY);
            }
        }
        let _ = s.dir(parent.0).map(|d| d.remove(name));
        let _ = s.dir(newparent.0).map(|d| d.insert(newname.to_os_string(), ino));
        s.collect();
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut s = self.lock();
        match s.file(ino.0) {
            Ok(f) => {
                if flags.0 & libc::O_TRUNC != 0 {
                    truncate(f, 0);
                }
                reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO)
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut s = self.lock();
        match s.file(ino.0) {
            Ok(f) => {
                let start = (offset as usize).min(f.visible.len());
                let end = (start + size as usize).min(f.visible.len());
                reply.data(&f.visible[start..end]);
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut s = self.lock();
        match s.file(ino.0) {
            Ok(f) => {
                let (start, end) = (offset as usize, offset as usize + data.len());
                if f.visible.len() < end {
                    f.visible.resize(end, 0);
                }
                f.visible[start..end].copy_from_slice(data);
                match f.dirty.last_mut() {
                    Some(last) if last.1 == start => last.1 = end,
                    _ => f.dirty.push((start, end)),
                }
                reply.written(data.len() as u32);
            }
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let mut s = self.lock();
        s.stats.file_syncs += 1;
        match s.file(ino.0) {
            Ok(f) => {
                f.durable.resize(f.visible.len(), 0);
                for (a, b) in std::mem::take(&mut f.dirty) {
                    let b = b.min(f.visible.len());
                    if a < b {
                        f.durable[a..b].copy_from_slice(&f.visible[a..b]);
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.lock().dir(ino.0) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let s = self.lock();
        let Some(Node { kind: Kind::Dir { visible, .. }, .. }) = s.nodes.get(&ino.0) else {
            return reply.error(Errno::ENOTDIR);
        };
        let mut entries: Vec<(u64, FileType, OsString)> =
            vec![(ino.0, FileType::Directory, ".".into()), (ino.0, FileType::Directory, "..".into())];
        for (name, &child) in visible {
            let kind = match s.nodes.get(&child).map(|n| &n.kind) {
                Some(Kind::Dir { .. }) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            entries.push((child, kind, name.clone()));
        }
        for (i, (child, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let mut s = self.lock();
        s.stats.dir_syncs += 1;
        match s.nodes.get_mut(&ino.0).map(|n| &mut n.kind) {
            Some(Kind::Dir { visible, durable }) => {
                *durable = visible.clone();
                s.collect();
                reply.ok()
            }
            Some(Kind::File(_)) => reply.error(Errno::ENOTDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let blocks = 64u64 << 20; // 256 GiB of 4 KiB blocks, nearly all free
        reply.statfs(blocks, blocks - 1024, blocks - 1024, 1 << 20, (1 << 20) - 1024, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        match self.lock().nodes.contains_key(&ino.0) {
            true => reply.ok(),
            false => reply.error(Errno::ENOENT),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = self.lock();
        let existing = s.dir(parent.0).map(|d| d.get(name).copied());
        let ino = match existing {
            Ok(Some(_)) if flags & libc::O_EXCL != 0 => return reply.error(Errno::EEXIST),
            Ok(Some(ino)) => {
                if flags & libc::O_TRUNC != 0 {
                    if let Ok(f) = s.file(ino) {
                        truncate(f, 0);
                    }
                }
                ino
            }
            Ok(None) => match s.add(parent.0, name, Kind::File(FileData::default()), (mode & 0o7777) as u16) {
                Ok(ino) => ino,
                Err(e) => return reply.error(e),
            },
            Err(e) => return reply.error(e),
        };
        let attr = s.attr(ino).expect("exists");
        reply.created(&TTL, &attr, Generation(0), FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
    }
}

/// Truncates or extends `f`'s visible data to `size` (not durable until a sync).
fn truncate(f: &mut FileData, size: usize) {
    let old = f.visible.len();
    f.visible.resize(size, 0);
    for r in &mut f.dirty {
        r.1 = r.1.min(size);
        r.0 = r.0.min(r.1);
    }
    f.dirty.retain(|r| r.0 < r.1);
    if size > old {
        // The zeros of an extension are written data too.
        f.dirty.push((old, size));
    }
}
