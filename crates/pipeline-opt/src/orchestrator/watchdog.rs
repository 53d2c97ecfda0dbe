//! The run's watchdog: a small process forked once per run that stops the run's stages
//! if the orchestrator dies without doing so itself (SIGKILL, an abort, the OOM killer).
//!
//! Each stage runs in a process group of its own, so nothing else would stop it. Setting
//! `PR_SET_PDEATHSIG` on every stage would, but only from a `pre_exec` hook, and that
//! hook forces `std` onto its fork-then-exec path: fork copies our page tables, which
//! made every stage start cost about twice what `posix_spawn` costs. One watchdog per run
//! keeps stage starts on `posix_spawn` and covers the whole group of each stage, not
//! only its leader.
//!
//! The protocol is one `i32` per message on a `SOCK_SEQPACKET` socket pair: `pgid > 0` a
//! stage started, `-pgid` it ended, `0` the run ended cleanly. End of file without a `0`
//! means the orchestrator is gone: every group still registered gets SIGTERM, then,
//! after the grace period, SIGKILL, and the files the run would have removed on its way
//! out (the jobserver FIFO and its directory) are removed.
//!
//! A process can leave its stage's group (a test that starts a daemon with `setsid`),
//! and once the orchestrator is gone, orphans no longer come back to its subreaper. Every
//! stage's process carries the run's marker in its environment, so the watchdog also
//! sweeps `/proc` for processes that carry it, with the same SIGTERM, grace, SIGKILL.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

pub(crate) struct Watchdog {
    sock: OwnedFd,
    pid: i32,
}

impl Watchdog {
    /// Forks the watchdog. `stages` bounds how many groups it can hold (each stage starts
    /// once per run); its memory is allocated here, before the fork, because the child
    /// of a multi-threaded process may not allocate. `leftovers` are files, then the
    /// (by then empty) directories, to remove if the orchestrator dies.
    pub(crate) fn start(
        stages: usize,
        grace: Duration,
        leftovers: &[&Path],
        run_id: &str,
    ) -> std::io::Result<Watchdog> {
        let mut sweep = Sweep {
            run_entry: format!("{}={run_id}", super::RUN_ID_VAR).into_bytes(),
            runs_prefix: format!("{}=", super::RUNS_VAR).into_bytes(),
            run_id: run_id.as_bytes().to_vec(),
            dirents: vec![0u8; 32 * 1024],
            environ: vec![0u8; 256 * 1024],
        };
        let leftovers: Vec<CString> =
            leftovers.iter().filter_map(|p| CString::new(p.as_os_str().as_bytes()).ok()).collect();
        let mut fds = [0; 2];
        // SAFETY: fds is a valid array of two ints.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: socketpair returned two fresh descriptors that we now own.
        let (ours, theirs) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let mut groups: Vec<i32> = Vec::with_capacity(stages.max(1));
        let grace = libc::timespec {
            tv_sec: grace.as_secs() as libc::time_t,
            tv_nsec: grace.subsec_nanos() as libc::c_long,
        };
        // SAFETY: the child runs only `watch`, which makes raw system calls and touches
        // no lock and no allocator, as the child of a multi-threaded process must.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: see above; `groups` has `capacity()` writable slots.
            unsafe {
                let groups = (groups.as_mut_ptr(), groups.capacity());
                watch(theirs.as_raw_fd(), groups, grace, &leftovers, &mut sweep)
            }
        }
        drop(theirs);
        Ok(Watchdog { sock: ours, pid })
    }

    pub(crate) fn started(&self, pgid: i32) {
        self.send(pgid);
    }

    pub(crate) fn ended(&self, pgid: i32) {
        self.send(-pgid);
    }

    fn send(&self, v: i32) {
        let b = v.to_ne_bytes();
        // SAFETY: b is 4 valid bytes; MSG_NOSIGNAL: a dead watchdog is an error, not a
        // SIGPIPE.
        unsafe {
            libc::send(self.sock.as_raw_fd(), b.as_ptr().cast(), b.len(), libc::MSG_NOSIGNAL)
        };
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.send(0);
        let mut status = 0;
        // SAFETY: our own child; it exits as soon as it reads the 0.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
    }
}

/// The watchdog's whole life. Raw system calls only (see [`Watchdog::start`]).
unsafe fn watch(
    fd: i32,
    (groups, cap): (*mut i32, usize),
    grace: libc::timespec,
    leftovers: &[CString],
    sweep: &mut Sweep,
) -> ! {
    // SAFETY (whole body): async-signal-safe calls on our own descriptors and memory;
    // `groups[..len]` stays within the `cap` slots allocated before the fork.
    unsafe {
        // Out of the orchestrator's group and deaf to the terminal: Ctrl-C or a kill of
        // that group is the orchestrator's to handle, and it must not take us with it.
        libc::setpgid(0, 0);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGPIPE] {
            libc::signal(sig, libc::SIG_IGN);
        }
        // Hold no other descriptor: a pipe's write end kept open here would keep its
        // reader from ever seeing end of file.
        libc::dup2(fd, 0);
        if libc::syscall(libc::SYS_close_range, 1u32, u32::MAX, 0u32) != 0 {
            for other in 1..4096 {
                libc::close(other);
            }
        }
        let mut len = 0usize;
        loop {
            let mut b = [0u8; 4];
            let n = libc::recv(0, b.as_mut_ptr().cast(), 4, 0);
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            if n != 4 {
                break; // end of file (or an error): the orchestrator is gone
            }
            let v = i32::from_ne_bytes(b);
            if v == 0 {
                libc::_exit(0);
            } else if v > 0 {
                if len < cap {
                    *groups.add(len) = v;
                    len += 1;
                }
            } else if let Some(i) = (0..len).find(|&i| *groups.add(i) == -v) {
                len -= 1;
                *groups.add(i) = *groups.add(len);
            }
        }
        for i in 0..len {
            libc::kill(-*groups.add(i), libc::SIGTERM);
        }
        sweep.signal(libc::SIGTERM);
        // Wait for the groups to go, up to the grace period, then kill what is left.
        let step = libc::timespec { tv_sec: 0, tv_nsec: 50_000_000 };
        let mut waited = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        while (waited.tv_sec, waited.tv_nsec) < (grace.tv_sec, grace.tv_nsec)
            && ((0..len).any(|i| libc::kill(-*groups.add(i), 0) == 0) || sweep.signal(0) > 0)
        {
            libc::nanosleep(&step, std::ptr::null_mut());
            waited.tv_nsec += step.tv_nsec;
            if waited.tv_nsec >= 1_000_000_000 {
                waited.tv_sec += 1;
                waited.tv_nsec -= 1_000_000_000;
            }
        }
        for i in 0..len {
            libc::kill(-*groups.add(i), libc::SIGKILL);
        }
        // A process may have started one more while it was being stopped.
        for _ in 0..3 {
            if sweep.signal(libc::SIGKILL) == 0 {
                break;
            }
            libc::nanosleep(&step, std::ptr::null_mut());
        }
        for path in leftovers {
            if libc::unlink(path.as_ptr()) != 0 {
                libc::rmdir(path.as_ptr());
            }
        }
        libc::_exit(0)
    }
}

/// Finds the run's processes by their marker in `/proc/PID/environ`, with buffers
/// allocated before the fork: the watchdog may not allocate.
struct Sweep {
    /// `PIPELINE_OPT_RUN_ID=<id>`.
    run_entry: Vec<u8>,
    /// `PIPELINE_OPT_RUNS=`, whose value lists the ids of the runs a process is nested in.
    runs_prefix: Vec<u8>,
    run_id: Vec<u8>,
    dirents: Vec<u8>,
    environ: Vec<u8>,
}

impl Sweep {
    /// Sends `sig` (0: none, only count) to every process but us that carries the run's
    /// marker; returns how many there were. Raw system calls only.
    unsafe fn signal(&mut self, sig: i32) -> usize {
        // SAFETY (whole body): system calls on our own descriptors into buffers of the
        // lengths passed.
        unsafe {
            let me = libc::getpid();
            let proc_fd = libc::open(c"/proc".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
            if proc_fd < 0 {
                return 0;
            }
            let mut found = 0;
            loop {
                let n = libc::syscall(
                    libc::SYS_getdents64,
                    proc_fd,
                    self.dirents.as_mut_ptr(),
                    self.dirents.len(),
                );
                if n <= 0 {
                    break;
                }
                let mut off = 0usize;
                while off < n as usize {
                    // linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name.
                    let rec = &self.dirents[off..n as usize];
                    let reclen = u16::from_ne_bytes([rec[16], rec[17]]) as usize;
                    let name = &rec[19..reclen.min(rec.len())];
                    let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                    off += reclen.max(1);
                    let Some(pid) = parse_pid(name) else { continue };
                    // A copy: the check reuses our buffers.
                    let mut digits = [0u8; 9];
                    digits[..name.len()].copy_from_slice(name);
                    let name = &digits[..name.len()];
                    if pid == me || !self.carries_marker(name) {
                        continue;
                    }
                    found += 1;
                    if sig != 0 {
                        libc::kill(pid, sig);
                    }
                }
            }
            libc::close(proc_fd);
            found
        }
    }

    /// Whether `/proc/<name>/environ` holds the run's marker.
    unsafe fn carries_marker(&mut self, name: &[u8]) -> bool {
        let mut path = [0u8; 64];
        let parts: [&[u8]; 3] = [b"/proc/", name, b"/environ\0"];
        let mut len = 0;
        for part in parts {
            if len + part.len() > path.len() {
                return false;
            }
            path[len..len + part.len()].copy_from_slice(part);
            len += part.len();
        }
        // SAFETY: `path` is NUL-terminated; reads stay within `environ`.
        let n = unsafe {
            let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY);
            if fd < 0 {
                return false;
            }
            let mut n = 0usize;
            while n < self.environ.len() {
                let r =
                    libc::read(fd, self.environ[n..].as_mut_ptr().cast(), self.environ.len() - n);
                if r <= 0 {
                    break;
                }
                n += r as usize;
            }
            libc::close(fd);
            n
        };
        self.environ[..n].split(|&b| b == 0).any(|entry| {
            entry == self.run_entry.as_slice()
                || entry.strip_prefix(self.runs_prefix.as_slice()).is_some_and(|runs| {
                    runs.split(|&b| b == b':').any(|id| id == self.run_id.as_slice())
                })
        })
    }
}

fn parse_pid(name: &[u8]) -> Option<i32> {
    if name.is_empty() || name.len() > 9 || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(name.iter().fold(0i32, |n, &d| n * 10 + i32::from(d - b'0')))
}
