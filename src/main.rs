//! repcached: flags -> Config -> bind -> (daemonize, drop privileges) -> serve.
//! Startup errors are printed as one line saying what to fix, with a non-zero exit code.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use repcached::config::{Args, Config};
use repcached::server::listener::{write_port_file, PORT_FILE_ENV};
use repcached::server::{Server, VERSION};

/// memcached's exit code for usage errors (EX_USAGE).
const EXIT_USAGE: u8 = 64;
/// memcached's exit code for OS errors such as a busy port (EX_OSERR).
const EXIT_OSERR: u8 = 71;

fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("repcached: {msg}");
    ExitCode::from(code)
}

/// Keeps segments and large buffers out of the allocator's heaps. glibc raises its mmap
/// threshold to the size of each mapped block freed (up to 32 MB), so after the first
/// freed segment or large read buffer, later ones of that size come from the per-thread
/// heaps, whose holes stay resident: with large items of changing sizes over several
/// connections, resident memory reached 10x `-m` (`-m 32 -I 16m -t 8`: 350 MB). A fixed
/// threshold keeps every such block mapped, so freeing it returns its pages at once, and
/// a zeroed segment costs memory only where items are written.
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // Blocks from this size up get pages of their own (glibc's initial threshold).
        const MMAP_THRESHOLD: libc::c_int = 128 << 10;
        // SAFETY: mallopt only changes the allocator's tuning; it runs before any thread
        // starts.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        }
    }
}

fn main() -> ExitCode {
    fix_mmap_threshold();
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            // clap's message is several lines; keep its first and say where the usage is.
            let first = e.to_string();
            let first = first
                .lines()
                .next()
                .unwrap_or("bad command line")
                .trim_start_matches("error: ");
            return fail(EXIT_USAGE, format!("{first}; run repcached -h for usage"));
        }
    };
    if args.help {
        let _ = Args::command().print_help();
        return ExitCode::SUCCESS;
    }
    if args.version {
        println!("repcached {VERSION}");
        return ExitCode::SUCCESS;
    }
    if args.license {
        println!("repcached is distributed under the BSD 3-clause license.");
        return ExitCode::SUCCESS;
    }
    let config = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_USAGE, e),
    };
    init_logging(config.verbose);
    repcached::server::process::ignore_hangup();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root && config.user.is_none() {
        return fail(
            EXIT_USAGE,
            "can't run as root without the -u switch; give -u USER to drop privileges",
        );
    }
    // Before privileges go (root may raise the hard limit), and before the listeners take
    // their first client.
    let file_limit = repcached::server::process::raise_file_limit(config.max_connections);
    let server = match Server::bind(config.clone()) {
        Ok(s) => s,
        Err(e) => return fail(EXIT_OSERR, e),
    };
    // As memcached: with a TCP/UDP setup (no -s), name the ports actually bound, so that
    // `-p -1` / `-U -1` can be found. A file that cannot be written is reported, not fatal.
    if config.listen.unix_socket.is_none() {
        if let Some(path) = std::env::var_os(PORT_FILE_ENV) {
            let path = std::path::PathBuf::from(path);
            if let Err(e) = write_port_file(&path, &server.local_addrs(), &server.udp_addrs()) {
                eprintln!(
                    "repcached: cannot write the port file {} named by {PORT_FILE_ENV}: {e}; check that its folder is writable",
                    path.display()
                );
            }
        }
    }
    if config.daemonize {
        if let Err(e) = repcached::server::process::daemonize(config.verbose > 0) {
            return fail(EXIT_OSERR, format!("cannot daemonize: {e}"));
        }
    }
    // As memcached: a pid file that cannot be written is reported, and the server runs (a
    // missing run folder after a reboot must not leave an init script's "started" empty).
    let mut pid_written = None;
    if let Some(path) = &config.pid_file {
        match repcached::server::process::write_whole(
            path,
            format!("{}\n", std::process::id()).as_bytes(),
        ) {
            Ok(()) => pid_written = Some(path),
            Err(e) => eprintln!(
                "repcached: cannot write pid file {}: {e}; serving without it (check -P)",
                path.display()
            ),
        }
    }
    if root {
        if let Some(user) = &config.user {
            if let Err(e) = repcached::server::process::drop_privileges(user) {
                return fail(EXIT_OSERR, e);
            }
        }
    }
    for w in config.warnings.iter().chain(&file_limit) {
        tracing::warn!("{w}");
    }
    // This runtime accepts connections, handles signals and runs background tasks; the
    // `-t` worker threads that serve connections are started by the server.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .thread_name("repcached-main")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(EXIT_OSERR, format!("cannot start worker threads: {e}")),
    };
    let result = runtime.block_on(async {
        let shared = server.shared();
        tokio::spawn(async move {
            repcached::server::process::wait_for_signal().await;
            shared.shutdown();
        });
        server.run().await
    });
    if let Some(path) = pid_written {
        let _ = std::fs::remove_file(path);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_OSERR, e),
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
