//! Process-level duties: daemonizing (`-d`), dropping root (`-u`), waiting for signals and
//! writing the pid and port files.
//! These are a few libc calls each; they run before the runtime's threads exist.

use std::ffi::CString;

/// Forks into the background the way memcached does: the parent exits, the child starts a
/// new session and points stdin and stdout at /dev/null. Stderr stays when it is a file (an
/// init script's `2>>log`: the log, replication's state changes included, goes on there),
/// or a terminal with `-v` (memcached keeps stdio with `-v`); a pipe never stays, so that
/// nothing waits for a daemon's output to end. Listeners are already bound, so a busy port
/// was reported on the terminal before this.
pub fn daemonize(verbose: bool) -> std::io::Result<()> {
    let keep_stderr = match stderr_kind() {
        Some(libc::S_IFREG) => true,
        Some(libc::S_IFCHR) => verbose,
        _ => false,
    };
    // SAFETY: called while the process is single-threaded (before the runtime starts);
    // fork/setsid/open/dup2 have no other preconditions.
    unsafe {
        match libc::fork() {
            -1 => return Err(std::io::Error::last_os_error()),
            0 => {}
            _ => libc::_exit(0),
        }
        if libc::setsid() == -1 {
            return Err(std::io::Error::last_os_error());
        }
        let devnull = CString::new("/dev/null").expect("no NUL in a literal");
        let fd = libc::open(devnull.as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            libc::dup2(fd, 0);
            libc::dup2(fd, 1);
            if !keep_stderr {
                libc::dup2(fd, 2);
            }
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
    Ok(())
}

/// The file type bits of stderr (`S_IFREG`, `S_IFCHR`, `S_IFIFO`...), if it is open.
fn stderr_kind() -> Option<libc::mode_t> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes the struct it is given; it is read only on success.
    unsafe {
        (libc::fstat(2, st.as_mut_ptr()) == 0).then(|| st.assume_init().st_mode & libc::S_IFMT)
    }
}

/// Switches to `user`'s uid and gid.
pub fn drop_privileges(user: &str) -> Result<(), String> {
    let name = CString::new(user).map_err(|_| format!("-u {user}: not a valid user name"))?;
    // SAFETY: getpwnam returns a pointer to static storage or null; we read it at once.
    unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        if pw.is_null() {
            return Err(format!("can't find the user {user} to switch to; check -u"));
        }
        let (uid, gid) = ((*pw).pw_uid, (*pw).pw_gid);
        if libc::setgroups(0, std::ptr::null()) != 0 && uid != 0 {
            return Err(format!("failed to drop supplementary groups for {user}"));
        }
        if libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
            return Err(format!(
                "failed to assume the identity of {user}; run as root or leave out -u"
            ));
        }
    }
    Ok(())
}

/// Ignores SIGHUP from now on, as memcached does: a reload or log rotation script, or the
/// end of the session that started the server, must not empty the cache. Called first
/// thing, before the listeners are bound (a client may reach them before serving starts).
pub fn ignore_hangup() {
    // SAFETY: setting a signal's disposition to "ignore" has no memory preconditions.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
}

/// Files the process needs besides client connections: listeners, replication links, the
/// log, the runtime's own.
pub const FILES_BESIDES_CLIENTS: u64 = 64;

/// Raises the open-file limit so that `-c` clients fit, as memcached does: under a
/// distribution's default of 1024 (or a service manager's lower one) the clients over the
/// limit were accepted by nobody and waited without a reply. Only the soft limit unless
/// that is not enough (root may raise the hard one too). Returns a warning to log when the
/// limit stays short.
pub fn raise_file_limit(max_connections: usize) -> Option<String> {
    let want = (max_connections as u64).saturating_add(FILES_BESIDES_CLIENTS);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 || lim.rlim_cur >= want {
        return None;
    }
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max.max(want),
    };
    // SAFETY: setrlimit reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return None;
    }
    let soft = want.min(lim.rlim_max);
    let capped = libc::rlimit {
        rlim_cur: soft,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    let now = if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) } == 0 {
        soft
    } else {
        lim.rlim_cur
    };
    Some(format!(
        "the open-file limit is {now}, too low for -c {max_connections}: about {} clients can \
         connect; raise it (ulimit -n {want}, or LimitNOFILE= in a systemd unit), start as root, or lower -c",
        now.saturating_sub(FILES_BESIDES_CLIENTS)
    ))
}

/// Resolves on SIGTERM, SIGINT or SIGUSR1 (memcached's graceful stop).
pub async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut usr1)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined1()),
    ) else {
        // Without signal handlers the default action (exit) still applies.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = usr1.recv() => {}
    }
}

/// Writes `path` so that a reader sees either no file or all of it: a script polling for
/// the pid file (`-P`) must never read it empty. The text goes to `path.lck` and is renamed
/// over `path`; where that folder is not writable but the file is (a pid file made ready
/// for an unprivileged user), it is written in place.
pub fn write_whole(path: &std::path::Path, text: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".lck");
    match std::fs::write(&tmp, text) {
        Ok(()) => std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        }),
        Err(_) => std::fs::write(path, text),
    }
}
