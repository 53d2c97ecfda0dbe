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

use crate::process::{self, GroupStop, MarkerSweep};

pub(crate) struct Watchdog {
    sock: OwnedFd,
    pid: i32,
}

impl Watchdog {
    /// The watchdog's process, which the orchestrator reaps itself when the run ends.
    pub fn pid(&self) -> i32 {
        self.pid
    }

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
        let mut sweep = MarkerSweep::new(run_id);
        let leftovers: Vec<CString> =
            leftovers.iter().filter_map(|p| CString::new(p.as_os_str().as_bytes()).ok()).collect();
        let mut fds = [0; 2];
        // SAFETY: fds is a valid array of two ints.
        #[cfg(target_os = "linux")]
        let kind = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC;
        // No SOCK_CLOEXEC elsewhere (macOS): set below, before any child is started.
        #[cfg(not(target_os = "linux"))]
        let kind = libc::SOCK_SEQPACKET;
        let r = unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, fds.as_mut_ptr()) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        #[cfg(not(target_os = "linux"))]
        for fd in fds {
            // SAFETY: fcntl on a descriptor socketpair just returned.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        // SAFETY: socketpair returned two fresh descriptors that we now own.
        let (ours, theirs) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let mut groups: Vec<i32> = Vec::with_capacity(stages.max(1));
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

/// The watchdog's whole life. Raw system calls and the allocation-free [`GroupStop`]
/// only (see [`Watchdog::start`]).
unsafe fn watch(
    fd: i32,
    (groups, cap): (*mut i32, usize),
    grace: Duration,
    leftovers: &[CString],
    sweep: &mut MarkerSweep,
) -> ! {
    // SAFETY (whole body): async-signal-safe calls on our own descriptors and memory;
    // `groups[..len]` stays within the `cap` slots allocated before the fork.
    unsafe {
        // Out of the orchestrator's group and deaf to the terminal: Ctrl-C or a kill of
        // that group is the orchestrator's to handle, and it must not take us with it.
        libc::setpgid(0, 0);
        process::ignore_terminal_signals();
        // Hold no other descriptor: a pipe's write end kept open here would keep its
        // reader from ever seeing end of file.
        libc::dup2(fd, 0);
        #[cfg(target_os = "linux")]
        let closed = libc::syscall(libc::SYS_close_range, 1u32, u32::MAX, 0u32) == 0;
        #[cfg(not(target_os = "linux"))]
        let closed = false;
        if !closed {
            for other in 1..4096 {
                libc::close(other);
            }
        }
        let mut len = 0usize;
        loop {
            let mut b = [0u8; 4];
            let n = libc::recv(0, b.as_mut_ptr().cast(), 4, 0);
            // Reads errno; allocates nothing.
            if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
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
        let mut marked = |sig| sweep.signal(sig);
        GroupStop::new(grace)
            .with_others(&mut marked)
            .poll(Duration::from_millis(50))
            .stop(std::slice::from_raw_parts(groups, len));
        for path in leftovers {
            if libc::unlink(path.as_ptr()) != 0 {
                libc::rmdir(path.as_ptr());
            }
        }
        libc::_exit(0)
    }
}
